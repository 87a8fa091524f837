"""Tables as a reader wants them: integers as integers, three significant digits, no stray index column.

The caption comes from the cell (``#| tbl-cap:``), so Quarto and the fallback
renderer number it; units belong in the column names (``"s / image"``). A column
``X`` with companions ``X lo`` and ``X hi`` (a 95% interval, as
:meth:`~diffusion_lib.evaluation.quality.QualityReport.row` writes them) is shown
as one column ``X [95% CI]``: ``4.30 [3.37, 5.23]``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Mapping, Optional

import pandas as pd
from pandas.io.formats.style import Styler

__all__ = ["format_number", "with_intervals", "table"]


def format_number(v: Any, digits: int = 3) -> str:
    """Integers with thousands separators; other numbers to ``digits`` significant digits; the rest as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Integral) or (isinstance(v, Real) and float(v).is_integer() and abs(v) >= 10**digits):
        return f"{int(v):,}"
    if isinstance(v, Real):
        x = float(v)
        if x == 0:
            return "0"
        if abs(x) >= 10 ** (digits - 1):
            return f"{x:,.0f}"
        if abs(x) < 10 ** -(digits + 1):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.{digits - 1}e}"
    return str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def with_intervals(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``df`` with every ``X``, ``X lo``, ``X hi`` triple folded into one text column ``X [95% CI]``."""
    out = df.copy()
    for col in [c for c in df.columns if f"{c} lo" in df.columns and f"{c} hi" in df.columns]:
        text = [format_number(v, digits) if _missing(lo) or _missing(hi) or _missing(v) else
                f"{format_number(v, digits)} [{format_number(lo, digits)}, {format_number(hi, digits)}]"
                for v, lo, hi in zip(df[col], df[f"{col} lo"], df[f"{col} hi"])]
        out[col] = text
        out = out.drop(columns=[f"{col} lo", f"{col} hi"]).rename(columns={col: f"{col} [95% CI]"})
    return out


def table(df: pd.DataFrame, *, index: bool = False, digits: int = 3,
          formats: Optional[Mapping[str, str]] = None) -> Styler:
    """A formatted view of ``df`` for the report (index hidden unless it is the row labels); intervals folded in."""
    if index:  # the row labels become the first column, under the index's name
        df = df.reset_index().rename(columns={"index": ""})
    df = with_intervals(df, digits)
    fmt = {c: (lambda v, d=digits: format_number(v, d)) for c in df.columns}
    for col, spec in (formats or {}).items():
        fmt[col] = (lambda v, s=spec: "" if v is None or (isinstance(v, float) and math.isnan(v)) else s.format(v))
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    return (df.style.format(fmt).hide(axis="index")
            .set_properties(subset=numeric, **{"text-align": "right"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))
