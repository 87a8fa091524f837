"""Render the executed chapters of a profile into the report.

    python tools/render_report.py --profile cpu [--renderer auto|quarto|plain]

With Quarto on PATH (``auto``), this runs ``quarto render --profile <profile>``
(the book is configured in ``_quarto.yml`` and ``_quarto-<profile>.yml``; the
executed notebooks are rendered as they are, never re-executed) into
``_book/<profile>/``.

Without Quarto it produces a static site with standard tools: every executed
notebook of ``results/<profile>/`` converted by nbconvert to HTML, with
navigation between chapters and an index page, in ``report/<profile>/``.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chapter_title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].split("{#")[0].strip()
    return "untitled"


def render_quarto(profile: str) -> Path:
    subprocess.run(["quarto", "render", "--profile", profile], cwd=ROOT, check=True)
    return ROOT / "_book" / profile


def render_plain(profile: str, out_root: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    src = ROOT / "results" / profile
    notebooks = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise SystemExit(f"error: no executed chapters in {src}; run `make results PROFILE={profile}` first")
    out = out_root / profile
    tmp = out_root / f".{profile}.rendering"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    exporter = HTMLExporter(template_name="lab")
    timings = json.loads((src / "timings.json").read_text()) if (src / "timings.json").exists() else {}
    pages = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        pages.append((path.stem, chapter_title(nb), nb))
    for i, (stem, title, nb) in enumerate(pages):
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        prev_link = f'<a href="{pages[i - 1][0]}.html">&larr; {html.escape(pages[i - 1][1])}</a>' if i else ""
        next_link = (f'<a href="{pages[i + 1][0]}.html">{html.escape(pages[i + 1][1])} &rarr;</a>'
                     if i + 1 < len(pages) else "")
        nav = (f'<nav class="report-nav" style="display:flex;gap:2em;padding:8px 16px;border-bottom:1px solid #ccc;'
               f'font-family:sans-serif">{prev_link}<a href="index.html">Contents</a>{next_link}</nav>')
        body = body.replace("<body", "<body data-chapter=\"" + stem + "\"", 1)
        body = _after_body(body, nav)
        (tmp / f"{stem}.html").write_text(body)
    items = "\n".join(
        f'<li><a href="{stem}.html">{html.escape(title)}</a>'
        + (f' <small>({timings[stem]["seconds"] / 60:.1f} min on {html.escape(timings[stem]["machine"])})</small>'
           if stem in timings else "")
        + "</li>"
        for stem, title, _ in pages
    )
    (tmp / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Diffusion models from scratch ({profile})</title>"
        "</head><body style='font-family:sans-serif;max-width:50em;margin:2em auto'>"
        f"<h1>Diffusion models from scratch</h1><p>Profile <b>{profile}</b>, rendered without Quarto "
        "(nbconvert).</p>"
        f"<ol>{items}</ol></body></html>"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _after_body(page: str, nav: str) -> str:
    start = page.index("<body")
    end = page.index(">", start) + 1
    return page[:end] + nav + page[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=("quick", "cpu", "gpu"))
    ap.add_argument("--renderer", default="auto", choices=("auto", "quarto", "plain"))
    ap.add_argument("--out", default=str(ROOT / "report"), help="output root of the plain renderer")
    args = ap.parse_args(argv)
    use_quarto = args.renderer == "quarto" or (args.renderer == "auto" and shutil.which("quarto"))
    if use_quarto:
        out = render_quarto(args.profile)
        print(f"report rendered by Quarto: {out}")
    else:
        out = render_plain(args.profile, Path(args.out))
        print(f"report rendered without Quarto (nbconvert): {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
