"""When is an executed chapter stale? When something it actually depends on has changed.

    python tools/staleness.py --profile cpu        (lists each chapter: fresh or stale, and why)

A chapter's recorded ``code`` hash (``results/<profile>/timings.json``) covers:

- its own source (``chapters/NN_name.py``) and its parameter file;
- the source of every ``diffusion_lib`` module it imports, followed transitively
  through the library's own imports (a package's ``__init__.py`` counts, since
  importing a module runs it);
- the hash of every chapter whose artifacts it reads (another chapter's folder,
  such as ``03_train``, named in its source), so retraining chapter 03 makes the
  chapters that load its model stale too.

So a change to a library module that a chapter does not import leaves that
chapter fresh, and a one-line fix re-executes only the chapters it can affect.

What is hashed is what a file means, not how it is written (:func:`canonical`):
a library module's tokens without comments, docstrings or layout (the same in
every Python, unlike its syntax tree or ``ast.unparse``); a
chapter's text without the Jupytext header (whose ``jupytext_version`` line
changes with the tool, not with the chapter); a parameter file without its
comment lines and trailing spaces.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import re
import sys
import tokenize
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "diffusion_lib"

__all__ = ["library_dependencies", "upstream_chapters", "code_hash", "stale_chapters"]


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file that defines module ``dotted`` under ``root`` (``pkg/mod.py`` or ``pkg/mod/__init__.py``)."""
    base = root.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_modules(path: Path, dotted: str) -> set[str]:
    """The project modules a file imports (absolute names), including packages whose ``__init__`` runs."""
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import submodule`
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def library_dependencies(source: Path, root: Path = ROOT) -> list[Path]:
    """Every ``diffusion_lib`` file that importing what ``source`` imports executes, sorted."""
    seen: dict[str, Path] = {}
    todo = [m for m in _imported_modules(source, "__chapter__")]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        f = _module_file(root, mod)
        if f is None:  # a name imported from a module, not a module
            continue
        seen[mod] = f
        todo.extend(_imported_modules(f, mod) - set(seen))
    return sorted(set(seen.values()))


def upstream_chapters(chapter_py: Path) -> list[str]:
    """The other chapters whose artifact folders this chapter's source names (e.g. ``03_train``)."""
    stems = {p.stem for p in chapter_py.parent.glob("[0-9][0-9]_*.py")} - {chapter_py.stem}
    return sorted(stems & set(re.findall(r"\b\d\d_[a-z0-9]+\b", chapter_py.read_text())))


_JUPYTEXT_HEADER = re.compile(r"\A# ---\n(?:#.*\n)*?# ---\n")


def _docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    """Where each docstring (of the module, a class or a function) begins: (line, column)."""
    return {(n.body[0].lineno, n.body[0].col_offset) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
            and isinstance(n.body[0].value.value, str)}


def _code(text: str, path: Path) -> str:
    """A module's tokens as written, one space apart: no comments, docstrings, blank lines or layout inside brackets.

    Every Python tokenizes code the same way except f-strings (3.12 splits them into parts), so an f-string is
    taken whole, as written: the result is the same in every Python the project supports.
    """
    docstrings, lines = _docstring_starts(ast.parse(text, str(path))), text.splitlines(keepends=True)
    out: list[str] = []
    fstring: list = []  # the start of the open f-strings (3.12 and later)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        kind = tokenize.tok_name[tok.type]
        if kind == "FSTRING_START":
            fstring.append(tok.start)
        elif kind == "FSTRING_END":
            (r0, c0), (r1, c1) = fstring.pop(), tok.end
            if not fstring:
                out.append("".join(lines[r0 - 1:r1])[c0:len("".join(lines[r0 - 1:r1 - 1])) + c1])
        elif fstring or kind in ("COMMENT", "NL", "ENCODING", "ENDMARKER") or (kind == "STRING" and tok.start in docstrings):
            continue
        elif kind == "NEWLINE":
            if out and out[-1] not in ("\n", "<indent>"):
                out.append("\n")
        else:
            out.append({"INDENT": "<indent>", "DEDENT": "<dedent>"}.get(kind, tok.string))
    return " ".join(out)


def canonical(f: Path, module: bool) -> bytes:
    """The part of a file (a library ``module`` or not) that a chapter's results depend on (see the module docstring)."""
    if not f.exists():
        return b"(missing)"
    text = f.read_text()
    if module:
        return _code(text, f).encode()
    text = _JUPYTEXT_HEADER.sub("", text)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if f.suffix == ".yaml":  # a parameter file's comment lines (they hold no block scalars, where # is text)
        lines = [line for line in lines if not line.lstrip().startswith("#")]
    return "\n".join(lines).encode()


@lru_cache(maxsize=None)
def _hash(chapter_py: Path, params_file: Path, root: Path, seen: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    modules = library_dependencies(chapter_py, root)
    for f in [chapter_py, params_file, *modules]:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(canonical(f, module=f in modules))
    for up in upstream_chapters(chapter_py):
        h.update(up.encode())
        if up in seen:  # two chapters that name each other: each counts the other's own files once
            continue
        h.update(_hash(chapter_py.with_name(f"{up}.py"), params_file.with_name(f"{up}.yaml"), root,
                       seen + (chapter_py.stem,)).encode())
    return h.hexdigest()[:16]


def code_hash(chapter: Path, params_file: Path, root: Path = ROOT, overrides: dict | None = None) -> str:
    """The hash of everything an executed chapter depends on (see the module docstring).

    ``overrides`` (the runner's ``-p NAME VALUE``) count too: a chapter executed
    with other parameters than its file's is not the profile's reference.
    """
    h = _hash(Path(chapter).with_suffix(".py").resolve(), Path(params_file).resolve(), Path(root).resolve())
    if overrides:
        h = hashlib.sha256((h + json.dumps(overrides, sort_keys=True, default=str)).encode()).hexdigest()[:16]
    return h


def stale_chapters(profile: str, root: Path = ROOT, results_root: Path | None = None,
                   overrides: dict | None = None) -> dict[str, str]:
    """Chapter -> why it is stale, for every chapter of ``profile`` whose recorded hash is not the current one.

    ``results_root`` (default ``root/results``) holds the profile's ``timings.json``; ``overrides`` are the
    runner's ``-p NAME VALUE`` (see :func:`code_hash`).
    """
    _hash.cache_clear()
    timings_path = (results_root or root / "results") / profile / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    stale = {}
    for py in sorted((root / "chapters").glob("[0-9][0-9]_*.py")):
        recorded = timings.get(py.stem, {}).get("code")
        now = code_hash(py, root / "params" / profile / f"{py.stem}.yaml", root, overrides)
        if recorded is None:
            stale[py.stem] = "never executed"
        elif recorded != now:
            stale[py.stem] = "its source, parameters, imported library modules or upstream chapters changed"
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    stale = stale_chapters(args.profile)
    for py in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py")):
        print(f"{py.stem:18s} {'stale: ' + stale[py.stem] if py.stem in stale else 'fresh'}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
