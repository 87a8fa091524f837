"""What a chapter opens with: the parameters that matter for it, and where the full parameter file is."""

from __future__ import annotations

from typing import Any, Mapping

from .claims import Md
from .tables import format_number

__all__ = ["ema_setting", "parameter_table"]


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, Mapping):
        return "; ".join(f"{k} {_value(x)}" for k, x in v.items())
    return format_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def parameter_table(profile: str, chapter: str, rows: Mapping[str, Any]) -> Md:
    """A captioned Markdown table of the parameters ``rows`` (label -> value), linking the chapter's parameter file.

    The link is relative to the chapter's page in the book (``results/<profile>/NN_name.html``);
    both renderers copy ``params/`` beside the pages.
    """
    lines = ["| parameter | value |", "| --- | --- |"]
    lines += [f"| {label} | {_value(v)} |" for label, v in rows.items()]
    path = f"params/{profile}/{chapter}.yaml"
    lines += ["", f": The parameters that matter here, in the **{profile}** profile (all of them: "
                  f"[`{path}`](../../{path})) {{#tbl-params-{chapter[:2]}}}"]
    return Md("\n".join(lines))


def ema_setting(cfg: Any) -> str:
    """A training configuration's EMA as a parameter table shows it: the decay, and whether it warms up."""
    return f"{cfg.ema_decay}{' with warm-up' if cfg.ema_warmup else ''}"
