"""The written answers: shown where the chapter reaches them, and kept for the book's "Answers" chapter.

An :class:`Answer` collects the paragraphs of one answer (plain Markdown or
:func:`~diffusion_lib.chapter.claims.claim` results, so a contradicted claim stays
a visible warning) and displays each as it is added. :meth:`Answer.save` writes
them, with the links to the evidence, to ``results/<profile>/answers/<key>.md``,
which ``tools/prerender.py`` gathers into the Answers chapter. Nothing in that
chapter is typed: it is what the run wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..core.files import atomic_write_text
from .claims import Md

__all__ = ["Answer"]


class Answer:
    """One answer of the assignment, e.g. ``Answer(ch.results, "q1")``."""

    def __init__(self, results: Path, key: str) -> None:
        self.path = Path(results) / "answers" / f"{key}.md"
        self.paragraphs: list[str] = []

    def add(self, text: Any) -> Md:
        """Add a paragraph (a string, or a claim / Markdown object) and return it for display."""
        md = text if isinstance(text, Md) else Md(str(getattr(text, "data", text)))
        self.paragraphs.append(md.data)
        return md

    def save(self, evidence: Sequence[str] = ()) -> Md:
        """Write the answer and its evidence (``@fig-..``, ``@tbl-..``, ``@sec-..``); returns the evidence line."""
        line = ("Evidence: " + ", ".join(evidence) + ".") if evidence else ""
        atomic_write_text(self.path, "\n\n".join(self.paragraphs + ([line] if line else [])) + "\n")
        return Md(line)
