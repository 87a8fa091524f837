"""How much of the rendered report a reader spends reading code.

    python tools/book_stats.py report/cpu

Counts the characters of text in each page's ``<main>``: source code (``<pre>``
blocks of Python, cells and library excerpts alike), cell outputs (``<pre
class="output">``), and everything else (prose, captions, tables). Prints the
totals and the code share; ``code_share`` returns them for tests.
"""

from __future__ import annotations

import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["code_share"]


class _CharCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.in_main = 0
        self.pre_kind: str | None = None
        self.skip = 0
        self.chars = {"code": 0, "output": 0, "other": 0}

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
        elif tag in ("style", "script", "math", "nav"):
            self.skip += 1
        elif tag == "pre" and self.in_main:
            self.pre_kind = "output" if "output" in (dict(attrs).get("class") or "").split() else "code"

    def handle_endtag(self, tag):
        if tag == "main":
            self.in_main -= 1
        elif tag in ("style", "script", "math", "nav"):
            self.skip -= 1
        elif tag == "pre":
            self.pre_kind = None

    def handle_data(self, data):
        if self.in_main and not self.skip:
            self.chars[self.pre_kind or "other"] += len(data.strip())


def code_share(site: Path) -> dict[str, float]:
    """Characters of code, outputs and other text over every page of a rendered report (not print.html)."""
    total = Counter(code=0, output=0, other=0)
    for page in Path(site).rglob("*.html"):
        if page.name != "print.html":
            c = _CharCounter()
            c.feed(page.read_text())
            total.update(c.chars)
    all_chars = total.total()
    return {**total, "total": all_chars, "code_share": total["code"] / all_chars if all_chars else 0.0}


def main(argv: list[str] | None = None) -> int:
    site = Path((argv if argv is not None else sys.argv[1:])[0])
    s = code_share(site)
    print(f"{site}: {s['code']:,} characters of code, {s['output']:,} of outputs, {s['other']:,} of prose, "
          f"tables and captions; code share {s['code_share']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
