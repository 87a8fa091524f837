"""Helpers for the chapters' written answers: numbers from the run, claims checked against it.

``claim(text, holds)`` renders ``text`` as Markdown when the run's data support
it, and a visible warning box naming the unsupported claim when they do not, so
a rerun that contradicts the prose never shows a silent falsehood.
"""

from __future__ import annotations

import html
import re

__all__ = ["claim", "CLAIM_WARNING_CLASS", "fmt", "Md"]

CLAIM_WARNING_CLASS = "claim-warning"


class Md:
    """A Markdown display object (what IPython's ``Markdown`` is, without importing IPython)."""

    def __init__(self, text: str) -> None:
        self.data = text

    def _repr_markdown_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return self.data


def _bold(text: str) -> str:
    """Markdown's **bold** kept inside the warning's HTML."""
    return re.sub(r"[*][*](.+?)[*][*]", r"<b>\1</b>", text)


def claim(text: str, holds: bool) -> Md:
    """``text`` if ``holds``, else a warning that the run does not support it."""
    if bool(holds):
        return Md(text)
    return Md(
        f'<div class="{CLAIM_WARNING_CLASS}" style="border:2px solid #c0392b;background:#fdecea;padding:6px">'
        f"<b>⚠ Claim not supported by this run:</b> {_bold(html.escape(text))}</div>"
    )


def fmt(x: float, digits: int = 3) -> str:
    """Compact number formatting for prose: 3 significant digits, thousands separators for large values."""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"
