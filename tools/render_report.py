"""Render the executed chapters of a profile into the report (website + PDF).

    python tools/render_report.py --profile cpu [--renderer auto|quarto|plain] [--no-pdf]

**With Quarto** on PATH (``auto``), this runs ``quarto render --profile <profile>``:
the book is configured in ``_quarto.yml`` and ``_quarto-<profile>.yml``; the
executed notebooks are rendered as they are, never re-executed; HTML and PDF
(Typst) go to ``_book/<profile>/``.

**Without Quarto** it builds the same report with standard tools into
``report/<profile>/``: each executed notebook is turned into Markdown (code,
outputs, figures with their ``fig-cap`` captions), converted by pandoc (from the
``pypandoc_binary`` wheel) into HTML with MathML, so formulas render with no
network, and linked into a site in the book's chapter order (front page first,
previous/next navigation, a contents sidebar). The PDF is the same pages printed
by headless Chromium (``report.pdf``).
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import headline  # noqa: E402

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; line-height: 1.5; }
.layout { display: flex; }
nav.sidebar { width: 16rem; flex: none; padding: 1rem; border-right: 1px solid #ddd; font-size: 0.9rem;
              position: sticky; top: 0; height: 100vh; overflow-y: auto; box-sizing: border-box; }
nav.sidebar a { display: block; padding: 0.2rem 0; color: #2c5d8f; text-decoration: none; }
nav.sidebar a.current { font-weight: bold; color: #000; }
main { max-width: 60rem; padding: 1rem 2rem; min-width: 0; }
.pager { display: flex; justify-content: space-between; border-top: 1px solid #ddd; margin-top: 2rem;
         padding-top: 0.5rem; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
pre.output { background: #fff; border-left: 3px solid #ccc; }
figure { margin: 1rem 0; } figure img { max-width: 100%; } figcaption { font-size: 0.9rem; color: #444; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; }
.claim-warning { border: 2px solid #c0392b; background: #fdecea; padding: 6px; }
div.injected-parameters::before { content: "parameters injected by Papermill for this profile"; font-size: 0.8rem;
                                 color: #666; }
@media print { nav.sidebar, .pager { display: none; } main { max-width: none; } .chapter { break-before: page; } }
"""


def chapter_title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"\s*\{#.*\}\s*$", "", line[2:]).strip()
    return "untitled"


def section_ids(nb) -> list[str]:
    return [m.group(1) for c in nb.cells if c.cell_type == "markdown" for m in re.finditer(r"\{#(sec-[\w-]+)\}", c.source)]


def _cell_options(source: str) -> tuple[dict[str, str], str]:
    """Quarto ``#| key: value`` lines at the top of a code cell, and the code without them."""
    opts, body = {}, []
    for line in source.splitlines():
        m = re.match(r"#\|\s*([\w-]+):\s*(.*)", line)
        if m and not body:
            opts[m.group(1)] = m.group(2).strip().strip('"')
        else:
            body.append(line)
    return opts, "\n".join(body).strip("\n")


def notebook_markdown(nb, stem: str, fig_dir: Path) -> str:
    """The executed notebook as pandoc Markdown; images are written to ``fig_dir``."""
    parts, n_img = [], 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        opts, code = _cell_options(cell.source)
        label = " .injected-parameters" if "injected-parameters" in tags else ""
        if code:
            parts.append(f"```{{.python .cell-code{label}}}\n{code}\n```")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text = out.text
                if out.name == "stderr" and ("\r" in text or "Warning" in text):
                    continue  # progress bars and library warnings
                parts.append("```{.output}\n" + text.rstrip() + "\n```")
            elif out.output_type == "error":
                tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))
                parts.append("```{.output .error}\n" + tb + "\n```")
            elif out.output_type in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "image/png" in data:
                    n_img += 1
                    name = f"{stem}_{n_img}.png"
                    (fig_dir / name).write_bytes(base64.b64decode(data["image/png"]))
                    cap = html.escape(opts.get("fig-cap", ""))
                    fid = f' id="{opts["label"]}"' if opts.get("label", "").startswith("fig-") else ""
                    parts.append(f'<figure{fid}><img src="figures/{name}" alt="{cap or "figure"}">'
                                 + (f"<figcaption>{cap}</figcaption>" if cap else "") + "</figure>")
                elif "text/html" in data:
                    cap = opts.get("tbl-cap", "")
                    parts.append(("<p class=\"table-caption\"><em>" + html.escape(cap) + "</em></p>\n" if cap else "")
                                 + "<div class=\"output-html\">\n" + data["text/html"] + "\n</div>")
                elif "text/markdown" in data:
                    parts.append(data["text/markdown"])
                elif "text/plain" in data:
                    parts.append("```{.output}\n" + data["text/plain"] + "\n```")
    return "\n\n".join(parts) + "\n"


def _pandoc(markdown: str, title: str) -> str:
    import pypandoc

    return pypandoc.convert_text(
        markdown, "html5", format="markdown+raw_html+tex_math_dollars-implicit_figures",
        extra_args=["--mathml", "--section-divs", f"--metadata=pagetitle:{title}", "--wrap=none"],
    )


def _resolve_refs(text: str, sec_pages: dict[str, str]) -> str:
    """Quarto cross-references to chapters (@sec-x) become links to their pages."""
    return re.sub(r"@(sec-[\w-]+)", lambda m: f"[{m.group(1)}]({sec_pages[m.group(1)]})" if m.group(1) in sec_pages
                  else m.group(0), text)


def _page(title: str, body: str, nav: str, pager: str, profile: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} · Diffusion models from scratch ({profile})</title>"
            f"<link rel='stylesheet' href='style.css'></head><body><div class='layout'>{nav}"
            f"<main>{body}{pager}</main></div></body></html>")


def render_plain(profile: str, out_root: Path, pdf: bool = True) -> Path:
    import nbformat

    src = ROOT / "results" / profile
    notebooks = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise SystemExit(f"error: no executed chapters in {src}; run `make results PROFILE={profile}` first")
    headline.main([profile])
    out = out_root / profile
    tmp = Path(tempfile.mkdtemp(prefix=f".{profile}.", dir=out_root if out_root.exists() else None))
    (tmp / "figures").mkdir()
    (tmp / "style.css").write_text(CSS)
    chapters = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        chapters.append({"stem": path.stem, "title": chapter_title(nb), "nb": nb, "secs": section_ids(nb)})
    sec_pages = {s: f"{c['stem']}.html" for c in chapters for s in c["secs"]}
    pages = [{"stem": "index", "title": "Preface"}] + chapters
    index_md = (ROOT / "index.qmd").read_text().replace("{{< include _headline.md >}}",
                                                      (ROOT / "_headline.md").read_text())
    for img in re.findall(r"\]\((results/[^)]+\.png)\)", index_md):  # the headline's sample grid
        shutil.copy(ROOT / img, tmp / "figures" / Path(img).name)
        index_md = index_md.replace(f"]({img})", f"](figures/{Path(img).name})")
    index_md = re.sub(r"\{#fig-[\w-]+[^}]*\}", "", index_md)
    bodies = {"index": _pandoc(_resolve_refs(index_md, sec_pages), "Preface")}
    for c in chapters:
        md = notebook_markdown(c["nb"], c["stem"], tmp / "figures")
        bodies[c["stem"]] = _pandoc(_resolve_refs(md, sec_pages), c["title"])
    for i, p in enumerate(pages):
        nav = "<nav class='sidebar'><b>Diffusion models from scratch</b><br><small>profile " + profile + "</small>" + "".join(
            f"<a href='{q['stem']}.html'{' class=current' if q is p else ''}>{html.escape(q['title'])}</a>"
            for q in pages) + "<a href='report.pdf'>PDF</a></nav>"
        prev_link = f"<a href='{pages[i - 1]['stem']}.html'>&larr; {html.escape(pages[i - 1]['title'])}</a>" if i else "<span></span>"
        next_link = (f"<a href='{pages[i + 1]['stem']}.html'>{html.escape(pages[i + 1]['title'])} &rarr;</a>"
                     if i + 1 < len(pages) else "<span></span>")
        body = bodies[p["stem"]] if p["stem"] != "index" else "<h1>Diffusion models from scratch</h1>" + bodies["index"]
        (tmp / f"{p['stem']}.html").write_text(_page(p["title"], f"<div class='chapter' data-chapter='{p['stem']}'>{body}</div>",
                                                      nav, f"<div class='pager'>{prev_link}{next_link}</div>", profile))
    # one page with everything, for printing
    all_body = "".join(f"<div class='chapter'>{'<h1>Diffusion models from scratch</h1>' if p['stem'] == 'index' else ''}"
                       f"{bodies[p['stem']]}</div>" for p in pages)
    (tmp / "print.html").write_text(_page("All chapters", all_body, "", "", profile))
    if pdf:
        _print_pdf(tmp / "print.html", tmp / "report.pdf")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _print_pdf(page: Path, pdf: Path) -> None:
    exe = find_chromium()
    if exe is None:
        print("note: no Chromium/Chrome found, so no PDF was made (install Debian's `chromium`)", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as profile_dir:
        subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--no-pdf-header-footer",
                        f"--print-to-pdf={pdf}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=600)


def render_quarto(profile: str) -> Path:
    subprocess.run(["quarto", "render", "--profile", profile], cwd=ROOT, check=True)
    return ROOT / "_book" / profile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=("quick", "cpu", "gpu"))
    ap.add_argument("--renderer", default="auto", choices=("auto", "quarto", "plain"))
    ap.add_argument("--out", default=str(ROOT / "report"), help="output root of the plain renderer")
    ap.add_argument("--no-pdf", action="store_true", help="plain renderer: skip the PDF")
    args = ap.parse_args(argv)
    use_quarto = args.renderer == "quarto" or (args.renderer == "auto" and shutil.which("quarto"))
    if use_quarto:
        out = render_quarto(args.profile)
        print(f"report rendered by Quarto (HTML and Typst PDF): {out}")
    else:
        out_root = Path(args.out)
        out_root.mkdir(parents=True, exist_ok=True)
        out = render_plain(args.profile, out_root, pdf=not args.no_pdf)
        pdf = " and report.pdf (Chromium)" if (out / "report.pdf").exists() else ""
        print(f"report rendered without Quarto (pandoc HTML with MathML{pdf}): {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
