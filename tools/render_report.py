"""Render the executed chapters of a profile into the report (website + PDF).

    python tools/render_report.py --profile cpu [--renderer auto|quarto|plain] [--no-pdf]

**With Quarto** on PATH (``auto``), this runs ``quarto render --profile <profile>``:
the book is configured in ``_quarto.yml`` and ``_quarto-<profile>.yml``; the
executed notebooks are rendered as they are, never re-executed; HTML and PDF
(Typst, A4) go to ``_book/<profile>/``.

**Without Quarto** it builds the same book with standard tools into
``report/<profile>/``, honouring the subset of Quarto's syntax the chapters use,
the same way Quarto does:

- cell options ``#| include``, ``#| echo`` (default from ``_quarto.yml``),
  ``#| output``, ``#| code-fold``, ``#| label: fig-..``/``tbl-..``,
  ``#| fig-cap``, ``#| tbl-cap``; Papermill's parameter cells are never shown;
- numbered chapters, sections, figures and tables (``Figure 4.2``), and the
  cross-references ``@sec-``, ``@fig-``, ``@tbl-`` resolved to links across pages
  (never inside code);
- ``{{< include file >}}`` and ``[@key]`` citations from ``references.bib``
  (pandoc's citeproc), with the bibliography on the references page;
- the same page layout as the Quarto book (``index.html``, the chapters under
  ``results/<profile>/``, the back matter at the root).

Pages are converted by pandoc (bundled in the ``pypandoc_binary`` wheel) to HTML
with MathML, so formulas render offline. ``report.pdf`` is all pages printed by
headless Chromium on A4, with a table of contents and a document outline.
"""

from __future__ import annotations

import argparse
import base64
import html
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import prerender  # noqa: E402

BOOK_TITLE = "Diffusion models from scratch"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; line-height: 1.55; }
.layout { display: flex; }
nav.sidebar { width: 17rem; flex: none; padding: 1rem; border-right: 1px solid #ddd; font-size: 0.9rem;
              position: sticky; top: 0; height: 100vh; overflow-y: auto; box-sizing: border-box; }
nav.sidebar a { display: block; padding: 0.2rem 0; color: #2c5d8f; text-decoration: none; }
nav.sidebar a.current { font-weight: bold; color: #000; }
main { max-width: 52rem; padding: 1rem 2rem; min-width: 0; }
.pager { display: flex; justify-content: space-between; border-top: 1px solid #ddd; margin-top: 2rem;
         padding-top: 0.5rem; }
pre { background: #f6f8fa; padding: 0.6rem; font-size: 0.82rem; white-space: pre-wrap; overflow-wrap: anywhere; }
pre.output { background: #fff; border-left: 3px solid #ccc; }
details.code-fold > summary { cursor: pointer; color: #555; font-size: 0.85rem; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; }
figcaption, .table-caption { font-size: 0.9rem; color: #333; }
.figure-number, .table-number { font-weight: bold; }
.table-block { margin: 1.2rem 0; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.3rem 0; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
.claim-warning, .callout-warning { border: 2px solid #c0392b; background: #fdecea; padding: 6px; }
.unresolved-ref { color: #c0392b; font-weight: bold; }
.source-note { font-size: 0.8rem; color: #666; margin-top: -0.6rem; }
.header-section-number { margin-right: 0.4em; }
.toc ol { list-style: none; padding-left: 1.2rem; }
.live-sampler { border: 1px solid #ccd; border-radius: 6px; padding: 0.6rem 1rem; margin: 1rem 0; background: #fafbff; }
.live-sampler .ls-controls label { margin-right: 1rem; font-size: 0.9rem; }
.live-sampler input[type=number] { width: 5rem; }
.live-sampler .ls-panes { display: flex; gap: 1.5rem; flex-wrap: wrap; }
.live-sampler .ls-label { font-size: 0.9rem; color: #333; text-align: center; }
.live-sampler canvas { width: 232px; image-rendering: pixelated; border: 1px solid #ddd; }
.live-sampler .ls-scrub { width: 100%; max-width: 500px; }
.live-sampler-unavailable canvas, .live-sampler-unavailable .ls-scrub { display: none; }
.title-page { text-align: center; padding-top: 30vh; }
@page { size: A4; margin: 16mm 14mm 16mm 14mm; }
@media print {
  nav.sidebar, .pager, .live-sampler { display: none; }
  main { max-width: none; padding: 0; }
  .chapter, .toc { break-before: page; }
  figure, .table-block, pre { break-inside: avoid; }
  .table-block { overflow: visible; }
  table { width: 100%; font-size: 0.72rem; }
  th, td { overflow-wrap: anywhere; padding: 0.1rem 0.3rem; }
  math { font-size: 0.92em; }
  details.code-fold > summary { display: none; }
  a { color: inherit; text-decoration: none; }
}
"""


# ----------------------------------------------------------------------------- the book's pages
@dataclass
class Page:
    src: str  # project-relative source (index.qmd, results/cpu/03_train.ipynb, ...)
    out: str  # project-relative output page (index.html, results/cpu/03_train.html, ...)
    number: int | None = None  # chapter number; None for unnumbered pages
    title: str = ""
    markdown: str = ""
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (page.out, "Figure 3.1")

    @property
    def stem(self) -> str:
        return Path(self.src).stem


def _merge(base: dict, over: dict) -> dict:
    """Quarto's profile merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def book_config(profile: str) -> tuple[list[str], dict]:
    """The chapter list of the profile's book and the options of ``_quarto.yml`` merged with ``_quarto-<profile>.yml``."""
    base = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    prof = yaml.safe_load((ROOT / f"_quarto-{profile}.yml").read_text())
    return prof["book"]["chapters"], _merge(base, prof)


_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


def _lines_outside_code(text: str):
    """(line, inside_code) for every line: fenced blocks (``` or ~~~, closed by a fence of the same
    character at least as long) and ``<pre>`` blocks are code."""
    fence, pre = None, False
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and not pre and m:
            fence = m.group(1)
            yield line, True
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = None
            yield line, True
        elif pre or re.match(r"\s*<pre[\s>]", line):
            pre = "</pre>" not in line or (not pre and line.count("<pre") > line.count("</pre>"))
            yield line, True
        else:
            yield line, False


_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(?:(?!\n\s*\n).)+?(?<!`)\1(?!`)", re.S)


def _split_code(text: str) -> list[tuple[bool, str]]:
    """(is_code, piece): fenced and ``<pre>`` blocks, and inline code spans (within a paragraph), are code."""
    blocks: list[tuple[bool, list[str]]] = []
    for line, code in _lines_outside_code(text):
        if blocks and blocks[-1][0] == code:
            blocks[-1][1].append(line)
        else:
            blocks.append((code, [line]))
    pieces: list[tuple[bool, str]] = []
    for code, lines in blocks:
        chunk = "\n".join(lines) + "\n"
        if code:
            pieces.append((True, chunk))
            continue
        pos = 0
        for m in _INLINE_CODE.finditer(chunk):
            pieces += [(False, chunk[pos:m.start()]), (True, m.group(0))]
            pos = m.end()
        pieces.append((False, chunk[pos:]))
    return pieces


def _in_prose(text: str, fn) -> str:
    """``fn`` applied to the text outside code only."""
    return "".join(piece if code else fn(piece) for code, piece in _split_code(text))


def _first_heading(text: str) -> tuple[str, str]:
    """The first level-1 heading's text and its attribute block."""
    for line, code in _lines_outside_code(text):
        m = re.match(r"#\s+(.*?)\s*(\{[^}]*\})?\s*$", line)
        if m and not code:
            return m.group(1), m.group(2) or ""
    return "untitled", ""


def _unnumbered(attrs: str) -> bool:
    """Quarto's two spellings: ``{.unnumbered}`` and ``{-}``."""
    return ".unnumbered" in attrs or bool(re.search(r"(^|[\s{])-(?=[\s}])", attrs))


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


_MARK = "\x00{kind}:{label}\x00"  # numbered later, in document order (number_floats)


def _figure(label: str, cap: str, img: str, style: str = "") -> str:
    head = _MARK.format(kind="Figure", label=label) + ": " if label.startswith("fig-") else ""
    fid = f' id="{label}"' if label else ""
    return (f'<figure{fid}><img src="{img}" alt="{html.escape(cap or "figure")}"{style}>'
            f"<figcaption>{head}{html.escape(cap)}</figcaption></figure>")


def _table(label: str, cap: str, body: str, cap_is_markdown: bool = False) -> str:
    fid = f' id="{label}"' if label else ""
    caption = cap if cap_is_markdown else html.escape(cap)
    return (f'<div class="table-block"{fid}>\n<p class="table-caption">{_MARK.format(kind="Table", label=label)}: '
            f"{caption}</p>\n\n{body}\n\n</div>")


def number_floats(page: Page) -> None:
    """Number figures and tables in the order a reader meets them (Figure 4.1, Table 4.1, ...); record labels."""
    counts = {"Figure": 0, "Table": 0}

    def repl(m: re.Match) -> str:
        kind, label = m.group(1), m.group(2)
        counts[kind] += 1
        num = f"{page.number}.{counts[kind]}" if page.number is not None else str(counts[kind])
        if label:
            page.labels[label] = (page.out, f"{kind} {num}")
        return f'<span class="{kind.lower()}-number">{kind} {num}</span>'

    page.markdown = re.sub("\x00(Figure|Table):([\\w-]*)\x00", repl, page.markdown)


def notebook_markdown(nb, page: Page, fig_dir: Path, echo_default: bool) -> str:
    """An executed notebook as pandoc Markdown, honouring the Quarto cell options; figures go to ``fig_dir``."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(_include(cell.source, (ROOT / page.src).parent))
            continue
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        opts, code = cell_options(cell.source)
        if opts.get("include") is False or {"parameters", "injected-parameters"} & set(tags):
            continue
        if opts.get("echo", echo_default) and code:
            block = f"```{{.python .cell-code}}\n{code}\n```"
            parts.append(f'<details class="code-fold"><summary>Code</summary>\n\n{block}\n\n</details>'
                         if opts.get("code-fold") else block)
        if opts.get("output") is False:
            continue
        label, fig_cap, tbl_cap = str(opts.get("label", "")), str(opts.get("fig-cap", "")), str(opts.get("tbl-cap", ""))
        for out in cell.get("outputs", []):
            parts.append(_output_markdown(out, page, fig_dir, label, fig_cap, tbl_cap))
    return "\n\n".join(p for p in parts if p) + "\n"


def _output_markdown(out, page: Page, fig_dir: Path, label: str, fig_cap: str, tbl_cap: str) -> str:
    if out.output_type == "stream":
        text = out.text.strip("\n")
        if out.name == "stderr" or not text.strip():
            return ""  # progress bars and library warnings stay out of the book; no empty boxes
        return "```{.output}\n" + text + "\n```"
    if out.output_type == "error":
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))
        return "```{.output .error}\n" + tb + "\n```"
    data = out.get("data", {})
    if "image/png" in data:
        n = len(list(fig_dir.glob(f"{page.stem}_*.png"))) + 1
        name = f"{page.stem}_{n}.png"
        (fig_dir / name).write_bytes(base64.b64decode(data["image/png"]))
        rel = posixpath.relpath(f"figures/{name}", posixpath.dirname(page.out) or ".")
        return _figure(label, fig_cap, rel)
    if "text/html" in data:
        body = "<div class=\"output-html\">\n" + data["text/html"] + "\n</div>"
        return _table(label, tbl_cap, body) if (tbl_cap or label.startswith("tbl-")) else body
    if "text/markdown" in data:
        return data["text/markdown"]
    text = data.get("text/plain", "")
    if not text.strip() or _REPR.match(text.strip()):
        return ""  # an object's repr (a figure, an axis), not a result
    return "```{.output}\n" + text + "\n```"


def qmd_markdown(path: Path) -> str:
    text = path.read_text()
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    return _include(text, path.parent)


# ----------------------------------------------------------------------------- numbering and references
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*(\{[^}]*\})?\s*$")


def number_headings(page: Page) -> None:
    """Number sections (3, 3.1, ...) outside code, record their labels, and set the page's title."""
    counters = [0] * 7
    lines = []
    for line, code in _lines_outside_code(page.markdown):
        h = None if code else _HEADING.match(line)
        if not h:
            lines.append(line)
            continue
        level, text, attrs = len(h.group(1)), h.group(2), h.group(3) or ""
        number = ""
        if page.number is not None and not _unnumbered(attrs):
            if level == 1:
                number = str(page.number)
            else:
                counters[level] += 1
                counters[level + 1:] = [0] * (6 - level)
                number = ".".join([str(page.number)] + [str(c) for c in counters[2:level + 1]])
        m_id = re.search(r"#([\w-]+)", attrs)
        if m_id and m_id.group(1).startswith("sec-"):
            kind = "Chapter" if level == 1 else "Section"
            page.labels[m_id.group(1)] = (page.out, f"{kind} {number}" if number else text)
        if level == 1 and not page.title:
            page.title = f"{number} {text}".strip()
        span = f'<span class="header-section-number">{number}</span> ' if number else ""
        lines.append(f"{h.group(1)} {span}{text} {attrs}".rstrip())
    page.markdown = "\n".join(lines) + "\n"


def caption_markdown_tables(page: Page) -> None:
    """Markdown tables captioned Quarto's way (``: caption {#tbl-x}``) become numbered, labelled blocks."""
    out: list[str] = []
    for line, code in _lines_outside_code(page.markdown):
        m = None if code else re.match(r"^:\s+(.*?)\s*\{#(tbl-[\w-]+)\}\s*$", line)
        if not m:
            out.append(line)
            continue
        while out and not out[-1].strip():
            out.pop()
        start = len(out)
        while start > 0 and out[start - 1].lstrip().startswith("|"):
            start -= 1
        table = out[start:]
        del out[start:]
        out += _table(m.group(2), m.group(1), "\n".join(table), cap_is_markdown=True).splitlines()
    page.markdown = "\n".join(out) + "\n"


def number_markdown_figures(page: Page) -> None:
    """Markdown images labelled Quarto's way (``![cap](src){#fig-x width=60%}``) become figures."""
    def repl(m: re.Match) -> str:
        cap, src, label, attrs = m.group(1), m.group(2), m.group(3), m.group(4)
        width = re.search(r"width=([\w.%]+)", attrs)
        return _figure(label, cap, src, f' style="width:{width.group(1)}"' if width else "")
    page.markdown = _in_prose(page.markdown,
                              lambda t: re.sub(r"!\[([^\]]*)\]\(([^)]+)\)\{#(fig-[\w-]+)([^}]*)\}", repl, t))


_REF = re.compile(r"(?<![\w@/])(-?)@((?:sec|fig|tbl)-[A-Za-z0-9_-]*[A-Za-z0-9_])")


def resolve_references(page: Page, labels: dict[str, tuple[str, str]]) -> list[str]:
    """Replace ``@sec-``/``@fig-``/``@tbl-`` outside code with links; returns the labels that did not resolve."""
    missing: list[str] = []
    here = posixpath.dirname(page.out) or "."

    def repl(m: re.Match) -> str:
        label = m.group(2)
        if label not in labels:
            missing.append(label)
            return f'<span class="unresolved-ref">?@{label}</span>'
        target, text = labels[label]
        if m.group(1) == "-":  # Quarto's -@fig-x: the number alone
            text = text.split(" ", 1)[-1]
        href = posixpath.relpath(target, here) if target != page.out else ""
        return f"[{text}]({href}#{label})"

    page.markdown = _in_prose(page.markdown, lambda t: _REF.sub(repl, t))
    return missing


def cited_keys(markdown: str, bib_keys: set[str]) -> set[str]:
    found = set()
    for is_code, piece in _split_code(markdown):
        if not is_code:
            found |= set(re.findall(r"@([\w:.-]*\w)", piece)) & bib_keys
    return found


def bib_keys(bib: Path) -> set[str]:
    return set(re.findall(r"@\w+\{([^,\s]+),", bib.read_text())) if bib.exists() else set()


# ----------------------------------------------------------------------------- pandoc and pages
def _pandoc(markdown: str, title: str, bib: Path | None, nocite: set[str] | None = None) -> str:
    import pypandoc

    args = ["--mathml", "--section-divs", f"--metadata=pagetitle:{title}", "--wrap=none"]
    if bib is not None:
        args += ["--citeproc", f"--bibliography={bib}", "--metadata=link-citations:true"]
        if nocite:  # in a metadata block: from the command line pandoc takes it as a string, not citations
            markdown = "---\nnocite: |\n  " + ", ".join(f"@{k}" for k in sorted(nocite)) + "\n---\n\n" + markdown
        else:
            args.append("--metadata=suppress-bibliography:true")
    return pypandoc.convert_text(markdown, "html5", format="markdown+raw_html+tex_math_dollars-implicit_figures",
                                 extra_args=args)


def _page_html(title: str, body: str, nav: str, pager: str, profile: str, css: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} · {BOOK_TITLE} ({profile})</title>"
            f"<link rel='stylesheet' href='{css}'></head><body><div class='layout'>{nav}"
            f"<main>{body}{pager}</main></div></body></html>")


def build_pages(profile: str, site: Path) -> list[Page]:
    """Every page of the profile's book as numbered Markdown with resolved references."""
    import nbformat

    entries, base = book_config(profile)
    echo_default = bool(base.get("execute", {}).get("echo", True))
    (site / "figures").mkdir(parents=True, exist_ok=True)
    pages, number = [], 0
    for src in entries:
        path = ROOT / src
        if not path.exists():
            raise SystemExit(f"error: {src} does not exist; run `make results PROFILE={profile}` first")
        out = str(Path(src).with_suffix(".html"))
        raw = qmd_markdown(path) if path.suffix == ".qmd" else None
        nb = nbformat.read(path, as_version=4) if raw is None else None
        first = raw if raw is not None else next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
        _, attrs = _first_heading(first)
        numbered = not _unnumbered(attrs)
        number += numbered
        page = Page(src, out, number if numbered else None)
        page.markdown = raw if raw is not None else notebook_markdown(nb, page, site / "figures", echo_default)
        number_markdown_figures(page)
        caption_markdown_tables(page)
        number_floats(page)
        number_headings(page)
        pages.append(page)
    labels = {k: v for p in pages for k, v in p.labels.items()}
    missing = [f"{p.src}: @{m}" for p in pages for m in resolve_references(p, labels)]
    if missing:
        print("warning: unresolved cross-references (shown in red): " + ", ".join(missing), file=sys.stderr)
    return pages


def _nav(pages: list[Page], current: Page, profile: str) -> str:
    here = posixpath.dirname(current.out) or "."
    links = "".join(f"<a href='{posixpath.relpath(p.out, here)}'{' class=current' if p is current else ''}>"
                    f"{html.escape(p.title)}</a>" for p in pages)
    pdf = posixpath.relpath("report.pdf", here)
    return (f"<nav class='sidebar'><b>{BOOK_TITLE}</b><br><small>profile {profile}</small>{links}"
            f"<a href='{pdf}'>PDF</a></nav>")


def _rebase_links(body: str, page: Page, refs_page: Page | None) -> str:
    """Citation links point at the references page; everything else is already relative to this page."""
    if refs_page is None or refs_page is page:
        return body
    target = posixpath.relpath(refs_page.out, posixpath.dirname(page.out) or ".")
    return re.sub(r'href="#(ref-[^"]+)"', rf'href="{target}#\1"', body)


def render_plain(profile: str, out_root: Path, pdf: bool = True) -> Path:
    """Render the profile's book without Quarto into ``out_root/<profile>``; returns that folder."""
    if not sorted((ROOT / "results" / profile).glob("[0-9][0-9]_*.ipynb")):
        raise SystemExit(f"error: no executed chapters in results/{profile}; run `make results PROFILE={profile}` first")
    prerender.main([profile])
    out = out_root / profile
    out_root.mkdir(parents=True, exist_ok=True)
    for stale in out_root.glob(f".{profile}.*"):  # the half-built site of a render that failed
        shutil.rmtree(stale, ignore_errors=True)
    site = Path(tempfile.mkdtemp(prefix=f".{profile}.", dir=out_root))
    (site / "style.css").write_text(CSS)
    pages = build_pages(profile, site)
    copy_page_images(pages, site)
    shutil.copytree(ROOT / "params" / profile, site / "params" / profile)
    subprocess.run([sys.executable, str(ROOT / "tools" / "widget_assets.py"), profile], check=False)
    shutil.copytree(ROOT / "widget", site / "widget")
    bib = ROOT / "references.bib"
    keys = bib_keys(bib)
    cited = set().union(*(cited_keys(p.markdown, keys) for p in pages))
    refs_page = next((p for p in pages if re.search(r"::: *\{#refs\}", p.markdown)), None)
    bodies = {}
    for p in pages:
        body = _pandoc(p.markdown, p.title, bib if keys else None, cited if p is refs_page else None)
        bodies[p.out] = _rebase_links(body, p, refs_page)
    for i, p in enumerate(pages):
        here = posixpath.dirname(p.out) or "."
        prev_link = (f"<a href='{posixpath.relpath(pages[i - 1].out, here)}'>&larr; {html.escape(pages[i - 1].title)}</a>"
                     if i else "<span></span>")
        next_link = (f"<a href='{posixpath.relpath(pages[i + 1].out, here)}'>{html.escape(pages[i + 1].title)} &rarr;</a>"
                     if i + 1 < len(pages) else "<span></span>")
        body = (f"<h1 class='book-title'>{BOOK_TITLE}</h1>" if p.src == "index.qmd" else "") + bodies[p.out]
        dest = site / p.out
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_page_html(p.title, f"<div class='chapter' data-chapter='{p.stem}'>{body}</div>",
                                   _nav(pages, p, profile), f"<div class='pager'>{prev_link}{next_link}</div>",
                                   profile, posixpath.relpath("style.css", here)))
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
        for src in set(re.findall(r'<img src="([^":#]+)"', p.markdown)):
            rel = posixpath.normpath(posixpath.join(here, src))
            if rel.startswith("figures/") or rel.startswith(".."):
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
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


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
        out = render_plain(args.profile, Path(args.out), pdf=not args.no_pdf)
        pdf = " and report.pdf (Chromium)" if (out / "report.pdf").exists() else ""
        print(f"report rendered without Quarto (pandoc HTML with MathML{pdf}): {out / 'index.html'}")
    print(f"its live sampler needs http: `make serve PROFILE={args.profile}` serves the book (http://localhost:8000/, "
          "or PORT=...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
