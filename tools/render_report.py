"""Render the executed chapters of a profile into the report (website + PDF).

    python tools/render_report.py --profile cpu [--renderer auto|quarto|plain] [--no-pdf]

**With Quarto** on PATH (``auto``), this runs ``quarto render --profile <profile>``
with this Python's folder first on PATH, so Quarto's pre-render step
(``tools/prerender.py``) runs in the project's Python: the book is configured in
``_quarto.yml`` and ``_quarto-<profile>.yml``; the executed notebooks are
rendered as they are, never re-executed; HTML and PDF (Typst, A4) go to
``_book/<profile>/``.

**Without Quarto** it builds the same book with pandoc into ``report/<profile>/``,
honouring the subset of Quarto's syntax the chapters use:

- cell options ``#| include``, ``#| echo`` (default from ``_quarto.yml``),
  ``#| output``, ``#| code-fold``, ``#| label: fig-..``/``tbl-..``,
  ``#| fig-cap``, ``#| tbl-cap``; Papermill's parameter cells are never shown;
- ``{{< include file >}}``;
- numbered chapters, sections, figures and tables (``Figure 4.2``), and the
  cross-references ``@sec-``, ``@fig-``, ``@tbl-`` resolved to links across pages;
  ``[@key]`` citations from ``references.bib`` (pandoc's citeproc), with the
  bibliography on the references page;
- the same page layout as the Quarto book (``index.html``, the chapters under
  ``results/<profile>/``, the back matter at the root).

Each page is read by pandoc's Markdown reader (bundled in the ``pypandoc_binary``
wheel); the numbering and the cross-references are done on its syntax tree, where
code is code and a reference is a citation, and pandoc writes HTML with MathML, so
formulas render offline. ``report.pdf`` is all pages printed by headless Chromium
on A4, with a table of contents and a document outline.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import prerender  # beside this file: on sys.path when this runs as a script, and under pytest (its pythonpath)

ROOT = Path(__file__).resolve().parent.parent

BOOK_TITLE = "Diffusion models from scratch"


# ----------------------------------------------------------------------------- the book's pages
@dataclass
class Page:
    src: str  # project-relative source (index.qmd, results/cpu/03_train.ipynb, ...)
    out: str  # project-relative output page (index.html, results/cpu/03_train.html, ...)
    number: int | None = None  # chapter number; None for unnumbered pages
    title: str = ""
    markdown: str = ""
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (page.out, "Figure 3.1")
    doc: dict = field(default_factory=dict)  # the page as pandoc's syntax tree (JSON)

    @property
    def stem(self) -> str:
        return Path(self.src).stem


def book_config(profile: str) -> tuple[list[str], bool]:
    """The chapter list of the profile's book, and whether a cell shows its code by default (``execute: echo``, with
    ``_quarto-<profile>.yml``'s options over ``_quarto.yml``'s, as Quarto merges them)."""
    base = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    prof = yaml.safe_load((ROOT / f"_quarto-{profile}.yml").read_text())
    execute = {**base.get("execute", {}), **prof.get("execute", {})}
    return prof["book"]["chapters"], bool(execute.get("echo", True))


# ----------------------------------------------------------------------------- notebooks and qmd to markdown
def cell_options(source: str) -> tuple[dict, str]:
    """Quarto ``#| key: value`` lines at the top of a code cell (YAML values), and the code without them."""
    opts, body, header = {}, [], True
    for line in source.splitlines():
        m = re.match(r"#\|\s*([\w-]+):\s*(.*)$", line) if header else None
        if m:
            opts[m.group(1)] = yaml.safe_load(m.group(2)) if m.group(2).strip() else ""
        else:
            header = False
            body.append(line)
    return opts, "\n".join(body).strip("\n")


def _include(text: str, base: Path, depth: int = 0) -> str:
    """Expand ``{{< include path >}}`` (``/path`` is relative to the project root, else to ``base``), recursively."""
    def repl(m: re.Match) -> str:
        target = m.group(1).strip()
        path = ROOT / target.lstrip("/") if target.startswith("/") else base / target
        if not path.exists() or depth > 8:
            why = "does not exist" if not path.exists() else "is included too deeply (a cycle?)"
            print(f"warning: include {target} {why}", file=sys.stderr)
            return f'<span class="unresolved-ref">missing include: {html.escape(target)}</span>'
        return _include(path.read_text(), path.parent, depth + 1)
    return re.sub(r"\{\{<\s*include\s+(\S+)\s*>\}\}", repl, text)


_REPR = re.compile(r"^<[\w.]+( [^>]*)?>$|^\[<[\w.]+.*>\]$", re.S)


def _fenced(text: str, attrs: str) -> str:
    """``text`` as a fenced block, its fence longer than any run of backticks inside it."""
    fence = "`" * max([3] + [len(r) + 1 for r in re.findall(r"`{3,}", text)])
    return f"{fence}{{{attrs}}}\n{text}\n{fence}"


def notebook_markdown(nb, page: Page, fig_dir: Path, echo_default: bool) -> str:
    """An executed notebook as pandoc Markdown, honouring the Quarto cell options; figures go to ``fig_dir``."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(_include(cell.source, (ROOT / page.src).parent))
            continue
        tags = cell.metadata.get("tags", [])
        opts, code = cell_options(cell.source)
        if cell.cell_type != "code" or opts.get("include") is False or {"parameters", "injected-parameters"} & set(tags):
            continue
        if opts.get("echo", echo_default) and code:
            block = _fenced(code, ".python .cell-code")
            parts.append(f'<details class="code-fold"><summary>Code</summary>\n\n{block}\n\n</details>'
                         if opts.get("code-fold") else block)
        if opts.get("output") is not False:
            label, fig_cap, tbl_cap = str(opts.get("label", "")), str(opts.get("fig-cap", "")), str(opts.get("tbl-cap", ""))
            parts += [_output_markdown(out, page, fig_dir, label, fig_cap, tbl_cap) for out in cell.get("outputs", [])]
    return "\n\n".join(p for p in parts if p) + "\n"


def _output_markdown(out, page: Page, fig_dir: Path, label: str, fig_cap: str, tbl_cap: str) -> str:
    anchor = f"#{label} " if label else ""
    if out.output_type == "stream":
        text = out.text.strip("\n")
        if out.name == "stderr" or not text.strip():
            return ""  # progress bars and library warnings stay out of the book; no empty boxes
        return _fenced(text, ".output")
    if out.output_type == "error":
        return _fenced(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", []))), ".output .error")
    data = out.get("data", {})
    if "image/png" in data:
        n = len(list(fig_dir.glob(f"{page.stem}_*.png"))) + 1
        (fig_dir / f"{page.stem}_{n}.png").write_bytes(base64.b64decode(data["image/png"]))
        rel = posixpath.relpath(f"figures/{page.stem}_{n}.png", posixpath.dirname(page.out) or ".")
        return f"![{fig_cap}]({rel})" + (f"{{#{label}}}" if label else "")
    if "text/html" in data:
        body = _fenced(f'<div class="output-html">\n{data["text/html"]}\n</div>', "=html")
        if not (tbl_cap or label.startswith("tbl-")):
            return body
        return f"::: {{{anchor}.table-block}}\n::: table-caption\n{tbl_cap}\n:::\n\n{body}\n:::"
    if "text/markdown" in data:
        return data["text/markdown"]
    text = data.get("text/plain", "")
    if not text.strip() or _REPR.match(text.strip()):
        return ""  # an object's repr (a figure, an axis), not a result
    return _fenced(text, ".output")


# ----------------------------------------------------------------------------- the syntax tree
READER = "markdown+raw_html+tex_math_dollars"
PANDOC = (3, 9)  # the first pandoc read here that gives a table the attributes of its caption (": cap {#tbl-x}")


def _pandoc(text: str, to: str, fmt: str = READER, args: list[str] | None = None) -> str:
    import pypandoc

    version = tuple(int(v) for v in pypandoc.get_pandoc_version().split(".")[:2])
    if version < PANDOC:
        raise SystemExit(f"error: the report needs pandoc {'.'.join(map(str, PANDOC))} or later, and pypandoc found "
                         f"{pypandoc.get_pandoc_version()}: pip install -e .[report] (its wheel bundles one)")
    return pypandoc.convert_text(text, to, format=fmt, extra_args=args or [])


def _elements(x):
    """Every element of a pandoc JSON tree, in reading order (an element before what it contains)."""
    if isinstance(x, dict):
        if "t" in x:
            yield x
        for v in list(x.values()):
            yield from _elements(v)
    elif isinstance(x, list):
        for v in list(x):
            yield from _elements(v)


def _text(x) -> str:
    """The plain text of inline elements."""
    return "".join(e["c"] if e["t"] == "Str" else " " if e["t"] in ("Space", "SoftBreak") else
                   e["c"][1] if e["t"] in ("Code", "Math") else "" for e in _elements(x))


def _str(s: str) -> dict:
    return {"t": "Str", "c": s}


def _span(cls: str, s: str) -> dict:
    return {"t": "Span", "c": [["", [cls], []], [_str(s)]]}


def _number_float(el: dict, kind: str, number: str) -> None:
    """A figure's caption, or a table's, starts with its number; a table becomes a captioned block."""
    head = [_span(f"{kind.lower()}-number", f"{kind} {number}"), _str(":"), {"t": "Space"}]
    if el["t"] == "Figure":
        el["c"][1][1][0]["c"][:0] = head
    elif el["t"] == "Table":  # Quarto's ": caption {#tbl-x}": the caption moves into the block's first paragraph
        attr, caption = el["c"][0], el["c"][1][1]
        el["c"][0], el["c"][1] = ["", [], []], [None, []]
        inlines = [i for b in caption for i in b["c"]]
        cap = {"t": "Div", "c": [["", ["table-caption"], []], [{"t": "Plain", "c": head + inlines}]]}
        el["t"], el["c"] = "Div", [[attr[0], ["table-block"], []], [cap, {"t": "Table", "c": el["c"]}]]
    else:  # a block with a table-caption block inside (a notebook's HTML table)
        cap = next(b for b in el["c"][1] if b["t"] == "Div" and "table-caption" in b["c"][0][1])
        inlines = [i for b in cap["c"][1] for i in b["c"]]
        cap["c"][1] = [{"t": "Plain", "c": head + inlines}]


def number_page(page: Page) -> None:
    """Number the page's sections (4, 4.1, ...), figures and tables (in the order a reader meets them), record their
    labels and set the page's title."""
    counters, floats = [0] * 7, {"Figure": 0, "Table": 0}
    for el in _elements(page.doc["blocks"]):
        if el["t"] == "Header":
            level, (ident, classes, _), inlines = el["c"]
            text, number = _text(inlines), ""
            if page.number is not None and "unnumbered" not in classes:
                counters[level] += 1
                counters[level + 1:] = [0] * (6 - level)
                number = ".".join([str(page.number)] + [str(c) for c in counters[2:level + 1]])
                inlines[:0] = [_span("header-section-number", number), {"t": "Space"}]
            if ident.startswith("sec-"):
                page.labels[ident] = (page.out, f"{'Chapter' if level == 1 else 'Section'} {number}" if number else text)
            if level == 1 and not page.title:
                page.title = f"{number} {text}".strip()
        elif (el["t"] == "Figure" and el["c"][0][0].startswith("fig-") or el["t"] == "Table" and el["c"][0][0]
              .startswith("tbl-") or el["t"] == "Div" and "table-block" in el["c"][0][1]):
            kind = "Figure" if el["t"] == "Figure" else "Table"
            floats[kind] += 1
            number = f"{page.number}.{floats[kind]}" if page.number is not None else str(floats[kind])
            if el["c"][0][0]:
                page.labels[el["c"][0][0]] = (page.out, f"{kind} {number}")
            _number_float(el, kind, number)


REF_KINDS = ("sec-", "fig-", "tbl-")


def resolve_references(page: Page, labels: dict[str, tuple[str, str]]) -> list[str]:
    """Turn the citations of ``@sec-``/``@fig-``/``@tbl-`` labels into links; returns the labels that did not resolve.

    Pandoc reads ``@fig-x`` as a citation, never inside code; ``-@fig-x`` (Quarto's number alone) is one whose
    author is suppressed. Citations of bibliography keys are left to citeproc.
    """
    missing: list[str] = []
    here = posixpath.dirname(page.out) or "."

    def link(c: dict) -> list[dict]:
        label = c["citationId"]
        if label not in labels:
            missing.append(label)
            return [_span("unresolved-ref", f"?@{label}")]
        target, text = labels[label]
        if c["citationMode"]["t"] == "SuppressAuthor":
            text = text.split(" ", 1)[-1]
        href = posixpath.relpath(target, here) if target != page.out else ""
        prefix = c["citationPrefix"] + [{"t": "Space"}] if c["citationPrefix"] else []
        hyperlink = {"t": "Link", "c": [["", [], []], [_str(text)], [f"{href}#{label}", ""]]}
        return prefix + [hyperlink] + c["citationSuffix"]

    for el in _elements(page.doc["blocks"]):
        if el["t"] != "Cite" or not any(c["citationId"].startswith(REF_KINDS) for c in el["c"][0]):
            continue
        out: list[dict] = []
        for c in el["c"][0]:  # a label becomes a link; a bibliography key stays a citation of its own
            out += ([_str("; ")] if out else []) + (link(c) if c["citationId"].startswith(REF_KINDS) else
                                                    [{"t": "Cite", "c": [[c], [_str("@" + c["citationId"])]]}])
        el["t"], el["c"] = "Span", [["", [], []], out]
    return missing


# ----------------------------------------------------------------------------- pages
def _page_html(title: str, body: str, nav: str, pager: str, profile: str, css: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} · {BOOK_TITLE} ({profile})</title>"
            f"<link rel='stylesheet' href='{css}'></head><body><div class='layout'>{nav}"
            f"<main>{body}{pager}</main></div></body></html>")


def build_pages(profile: str, site: Path) -> list[Page]:
    """Every page of the profile's book, read by pandoc, numbered, with its references resolved."""
    import nbformat

    entries, echo_default = book_config(profile)
    (site / "figures").mkdir(parents=True, exist_ok=True)
    pages, number = [], 0
    for src in entries:
        path = ROOT / src
        page = Page(src, str(Path(src).with_suffix(".html")))
        if path.suffix == ".qmd":  # pandoc's reader takes any YAML front matter as metadata
            page.markdown = _include(path.read_text(), path.parent)
        else:
            page.markdown = notebook_markdown(nbformat.read(path, as_version=4), page, site / "figures", echo_default)
        page.doc = json.loads(_pandoc(page.markdown, "json"))
        first = next((e for e in page.doc["blocks"] if e["t"] == "Header" and e["c"][0] == 1), None)
        if first is None or "unnumbered" not in first["c"][1][1]:
            number += 1
            page.number = number
        number_page(page)
        pages.append(page)
    labels = {k: v for p in pages for k, v in p.labels.items()}
    missing = [f"{p.src}: @{m}" for p in pages for m in resolve_references(p, labels)]
    if missing:
        print("warning: unresolved cross-references (shown in red): " + ", ".join(missing), file=sys.stderr)
    return pages


def page_body(page: Page, bib: Path | None, nocite: set[str] | None = None) -> str:
    """The page's HTML (pandoc: MathML, section divs, citeproc with links to the references page)."""
    args = ["--mathml", "--section-divs", f"--metadata=pagetitle:{page.title}", "--wrap=none"]
    if bib is not None:
        args += ["--citeproc", f"--bibliography={bib}", "--metadata=link-citations:true"]
        if nocite:
            page.doc["meta"]["nocite"] = {"t": "MetaInlines", "c": [
                {"t": "Cite", "c": [[{"citationId": k, "citationPrefix": [], "citationSuffix": [],
                                      "citationMode": {"t": "NormalCitation"}, "citationNoteNum": 0,
                                      "citationHash": 0} for k in sorted(nocite)], []]}]}
        else:
            args.append("--metadata=suppress-bibliography:true")
    return _pandoc(json.dumps(page.doc), "html5", "json", args)


def site_page(pages: list[Page], i: int, body: str, profile: str) -> str:
    """Page ``i`` of the website: the sidebar (every page, and the PDF), its body, and links to the pages around it."""
    p = pages[i]
    here = posixpath.dirname(p.out) or "."
    links = "".join(f"<a href='{posixpath.relpath(q.out, here)}'{' class=current' if q is p else ''}>"
                    f"{html.escape(q.title)}</a>" for q in pages)
    pdf = posixpath.relpath("report.pdf", here)
    nav = (f"<nav class='sidebar'><b>{BOOK_TITLE}</b><br><small>profile {profile}</small>{links}"
           f"<a href='{pdf}'>PDF</a></nav>")
    prev_link = (f"<a href='{posixpath.relpath(pages[i - 1].out, here)}'>&larr; {html.escape(pages[i - 1].title)}</a>"
                 if i else "<span></span>")
    next_link = (f"<a href='{posixpath.relpath(pages[i + 1].out, here)}'>{html.escape(pages[i + 1].title)} &rarr;</a>"
                 if i + 1 < len(pages) else "<span></span>")
    title = f"<h1 class='book-title'>{BOOK_TITLE}</h1>" if p.src == "index.qmd" else ""
    return _page_html(p.title, f"<div class='chapter' data-chapter='{p.stem}'>{title}{body}</div>", nav,
                      f"<div class='pager'>{prev_link}{next_link}</div>", profile, posixpath.relpath("style.css", here))


def _rebase_links(body: str, page: Page, refs_page: Page | None) -> str:
    """Citation links point at the references page; everything else is already relative to this page."""
    if refs_page is None or refs_page is page:
        return body
    target = posixpath.relpath(refs_page.out, posixpath.dirname(page.out) or ".")
    return re.sub(r'href="#(ref-[^"]+)"', rf'href="{target}#\1"', body)


def render_plain(profile: str, out_root: Path, pdf: bool = True) -> Path:
    """Render the profile's book without Quarto into ``out_root/<profile>``; returns that folder."""
    missing = [src for src in book_config(profile)[0] if not (ROOT / src).exists()]
    if missing:  # checked before anything is written
        raise SystemExit(f"error: {', '.join(missing)} not found; run `make results PROFILE={profile}` first")
    prerender.main([profile])
    out = out_root / profile
    out_root.mkdir(parents=True, exist_ok=True)
    for stale in out_root.glob(f".{profile}.*"):  # the half-built site of a render that failed
        shutil.rmtree(stale, ignore_errors=True)
    site = Path(tempfile.mkdtemp(prefix=f".{profile}.", dir=out_root))
    shutil.copy(ROOT / "tools" / "report.css", site / "style.css")
    pages = build_pages(profile, site)
    copy_page_images(pages, site)
    shutil.copytree(ROOT / "params" / profile, site / "params" / profile)
    shutil.copytree(ROOT / "widget", site / "widget")  # made by the pre-render step
    refs_page = next((p for p in pages if any(e["t"] == "Div" and e["c"][0][0] == "refs"
                                              for e in _elements(p.doc["blocks"]))), None)
    cited = {c["citationId"] for p in pages for e in _elements(p.doc["blocks"]) if e["t"] == "Cite" for c in e["c"][0]}
    bodies = {p.out: _rebase_links(page_body(p, ROOT / "references.bib", cited if p is refs_page else None),
                                   p, refs_page) for p in pages}
    for i, p in enumerate(pages):
        (site / p.out).parent.mkdir(parents=True, exist_ok=True)
        (site / p.out).write_text(site_page(pages, i, bodies[p.out], profile))
    (site / "print.html").write_text(print_page(pages, bodies, profile))
    if pdf:
        print_pdf(site / "print.html", site / "report.pdf")
    old = out_root / f".{profile}.previous"
    if out.exists():  # the old report stays whole until the new one has taken its place
        os.replace(out, old)
    os.replace(site, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def copy_page_images(pages: list[Page], site: Path) -> None:
    """Images a page links by a relative path (other than the rendered figures) are copied beside it in the site."""
    for p in pages:
        here = posixpath.dirname(p.out) or "."
        for src in {e["c"][2][0] for e in _elements(p.doc["blocks"]) if e["t"] == "Image"}:
            rel = posixpath.normpath(posixpath.join(here, src))
            if ":" in src or rel.startswith("figures/") or rel.startswith(".."):
                continue
            if (ROOT / rel).is_file():
                (site / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / rel, site / rel)
            else:
                print(f"warning: {p.src} shows {src}, which does not exist", file=sys.stderr)


def print_page(pages: list[Page], bodies: dict[str, str], profile: str) -> str:
    """One document with everything, links turned into in-document anchors, for the PDF."""
    toc = ["<div class='toc'><h1>Contents</h1><ol>"]
    chapters = []
    for p in pages:
        anchor = f"page-{p.stem}"
        toc.append(f"<li><a href='#{anchor}'>{html.escape(p.title)}</a></li>")
        body = bodies[p.out]
        body = re.sub(r'(src|href)="((?:\.\./)*)([^"#:]+\.(?:png|yaml|pdf))"',
                      lambda m: f'{m.group(1)}="{posixpath.normpath(posixpath.join(posixpath.dirname(p.out) or ".", m.group(2) + m.group(3)))}"',
                      body)
        body = re.sub(r'href="[^"#:]*\.html#([^"]+)"', r'href="#\1"', body)
        body = re.sub(r'href="([^"#:]*)\.html"', lambda m: f'href="#page-{Path(m.group(1)).name}"', body)
        chapters.append(f"<div class='chapter' id='{anchor}'>{body}</div>")
    toc.append("</ol></div>")
    title = (f"<div class='title-page'><h1>{BOOK_TITLE}</h1><p>DDPM on MNIST, written from scratch, measured and "
             f"explained</p><p>profile <b>{profile}</b></p></div>")
    return _page_html("All chapters", title + "".join(toc) + "".join(chapters), "", "", profile, "style.css")


# ----------------------------------------------------------------------------- PDF and Quarto
def find_chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((exe for exe in map(shutil.which, names) if exe), None)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def print_pdf(page: Path, pdf: Path) -> None:
    exe = find_chromium()
    if exe is None:
        print("note: no Chromium/Chrome found, so no PDF was made (install Debian's `chromium`)", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as profile_dir:
        try:
            subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--no-pdf-header-footer",
                            "--generate-pdf-document-outline", f"--print-to-pdf={pdf}", page.resolve().as_uri()],
                           check=True, capture_output=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"note: Chromium could not print the PDF ({type(exc).__name__}); the website is complete",
                  file=sys.stderr)


def render_quarto(profile: str) -> Path:
    # Quarto runs a pre-render script with the python3 it finds on PATH: this one, which has the library
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    subprocess.run(["quarto", "render", "--profile", profile], cwd=ROOT, check=True, env={**os.environ, "PATH": path})
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
        out = render_plain(args.profile, Path(args.out), pdf=not args.no_pdf)
        pdf = " and report.pdf (Chromium)" if (out / "report.pdf").exists() else ""
        print(f"report rendered without Quarto (pandoc HTML with MathML{pdf}): {out / 'index.html'}")
    print(f"its live sampler needs http: `make serve PROFILE={args.profile}` serves the book (http://localhost:8000/, "
          "or PORT=...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
