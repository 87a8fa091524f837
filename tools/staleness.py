"""When is an executed chapter stale? When something it actually depends on has changed.

    python tools/staleness.py --profile cpu        (lists each chapter: fresh or stale, and why)

A chapter's recorded ``code`` key (``results/<profile>/timings.json``) covers:

- its own source (``chapters/NN_name.py``) and its parameter file;
- for every ``diffusion_lib`` module its imports reach (followed through the
  library's own imports; a name imported from the package itself counts as the
  module that defines it):
  - when a component's probe covers the module (the network, the diffusion
    maths, the trainer, the data, the instruments, the likelihood bound: see
    :mod:`diffusion_lib.chapter.keys`), that component's key: what the code
    computes, not how it is written, so a rename, a function moved between
    modules or a reformatting changes nothing, and a U-Net edit makes stale
    exactly the chapters that build U-Nets;
  - any other module by its source (towards stale, never towards fresh);
- the key of every chapter whose artifacts it reads (another chapter's folder,
  such as ``03_train``, named in its source), so retraining chapter 03 makes the
  chapters that load its model stale too; that key leaves out the other
  chapter's Markdown cells, which change what it says, not what it computes
  (so a chapter reads only what another chapter's code decides: its trained
  model and summaries, not the figures a re-execution redraws).

A component whose key cannot be computed here (no data, no instrument, no
PyTorch) makes the chapters that depend on it stale. A module's source is
what it means, not how it is written (:func:`canonical`): its tokens without
comments, docstrings or layout (the same in every Python, unlike its syntax
tree or ``ast.unparse``); a chapter's text without the Jupytext header (whose
``jupytext_version`` line changes with the tool, not with the chapter); a
parameter file without its comment lines and trailing spaces.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "diffusion_lib"
KEYS_MODULE = f"{PACKAGE}/chapter/keys.py"

__all__ = ["library_dependencies", "upstream_chapters", "component_keys", "code_hash", "stale_chapters"]


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


def _package_exports(root: Path) -> dict[str, str]:
    """Name -> the module that defines it, for the names ``diffusion_lib/__init__.py`` imports from its modules."""
    exports = {}
    for node in ast.parse((root / PACKAGE / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            exports.update({a.asname or a.name: f"{PACKAGE}.{node.module}" for a in node.names})
    return exports


def library_dependencies(source: Path, root: Path = ROOT) -> list[Path]:
    """Every ``diffusion_lib`` module whose code what ``source`` imports uses, sorted.

    The package's ``__init__`` only gathers names: a name imported from it (``from diffusion_lib import
    DiffusionProcess``) counts as the module that defines it, and importing a submodule does not make a chapter
    depend on everything the package's ``__init__`` imports. The keys module's own imports are not followed: it
    imports every component to probe it, and a chapter that uses keys (the evaluation cache) depends on the
    components it reaches itself, not on all of them.
    """
    exports = _package_exports(root)
    seen: dict[str, Path] = {}
    todo = list(_imported_modules(source, "__chapter__"))
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        if mod == PACKAGE:  # the package's __init__: only the names taken from it count (below)
            continue
        if mod.count(".") == 1 and mod.partition(".")[2] in exports:  # `from diffusion_lib import Name`
            todo.append(exports[mod.partition(".")[2]])
            continue
        f = _module_file(root, mod)
        if f is None:  # a name imported from a module, not a module
            continue
        seen[mod] = f
        if f != root / KEYS_MODULE:  # the keys module imports every component to probe it, not to compute with it
            todo.extend(_imported_modules(f, mod) - set(seen))
    return sorted(set(seen.values()))


def upstream_chapters(chapter_py: Path) -> list[str]:
    """The other chapters whose artifact folders this chapter's source names (e.g. ``03_train``)."""
    stems = {p.stem for p in chapter_py.parent.glob("[0-9][0-9]_*.py")} - {chapter_py.stem}
    return sorted(stems & set(re.findall(r"\b\d\d_[a-z0-9]+\b", chapter_py.read_text())))


_JUPYTEXT_HEADER = re.compile(r"\A# ---\n(?:#.*\n)*?# ---\n")
_MARKDOWN_CELL = re.compile(r"^# ?%% \[markdown\].*\n(?:#(?!\s?%%).*\n|\n)*", re.M)  # a percent-format Markdown cell


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


def canonical(f: Path, module: bool, code_only: bool = False) -> bytes:
    """The part of a file (a library ``module`` or not) that a chapter's results depend on (see the module docstring).

    ``code_only``: a chapter without its Markdown cells, for the chapters that read its artifacts.
    """
    if not f.exists():
        return b"(missing)"
    text = f.read_text()
    if module:
        return _code(text, f).encode()
    text = _JUPYTEXT_HEADER.sub("", text)
    if code_only:
        text = _MARKDOWN_CELL.sub("", text)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if f.suffix == ".yaml":  # a parameter file's comment lines (they hold no block scalars, where # is text)
        lines = [line for line in lines if not line.lstrip().startswith("#")]
    return "\n".join(lines).encode()


@lru_cache(maxsize=None)
def component_keys(root: Path = ROOT) -> dict:
    """``{"keys": component -> key, "modules": component -> its modules}`` of the library under ``root``.

    Computed by that library (``python -m diffusion_lib.chapter.keys``, with this interpreter); where it cannot
    run, every key reads ``unavailable``, which makes the chapters that depend on one stale.
    """
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-m", f"{PACKAGE}.chapter.keys"], cwd=root, env=env, capture_output=True,
                       text=True)
    if r.returncode == 0:
        try:
            return json.loads(r.stdout)
        except ValueError:
            pass
    why = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return {"keys": {}, "modules": {}, "unavailable": f"the component keys could not be computed ({why})"}


def _component(root: Path, f: Path) -> str | None:
    rel = f.relative_to(root / PACKAGE).as_posix()
    return next((c for c, mods in component_keys(root)["modules"].items() if rel in mods), None)


@lru_cache(maxsize=None)
def _hash(chapter_py: Path, params_file: Path, root: Path, seen: tuple[str, ...] = (),
          code_only: bool = False) -> str:
    h = hashlib.sha256()
    for f in (chapter_py, params_file):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(canonical(f, module=False, code_only=code_only))
    components = set()
    for f in library_dependencies(chapter_py, root):
        c = _component(root, f)
        if f == root / KEYS_MODULE:  # what it computes, the keys, is counted below
            continue
        if c is None:  # no probe covers it: its source counts
            h.update(f.relative_to(root).as_posix().encode())
            h.update(canonical(f, module=True))
        else:
            components.add(c)
    keys = component_keys(root)
    for c in sorted(components) if "unavailable" not in keys else ["library"]:
        key = keys["keys"].get(c, "unavailable")
        # a key that cannot be computed matches nothing, not even itself: the chapter stays stale until it can be
        h.update(f"{c}={key}".encode() if not key.startswith("unavailable") else os.urandom(16))
    for up in upstream_chapters(chapter_py):
        h.update(up.encode())
        if up in seen:  # two chapters that name each other: each counts the other's own files once
            continue
        h.update(_hash(chapter_py.with_name(f"{up}.py"), params_file.with_name(f"{up}.yaml"), root,
                       seen + (chapter_py.stem,), code_only=True).encode())
    return h.hexdigest()[:16]


def code_hash(chapter: Path, params_file: Path, root: Path = ROOT, overrides: dict | None = None) -> str:
    """The key of everything an executed chapter depends on (see the module docstring).

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
    component_keys.cache_clear()
    timings_path = (results_root or root / "results") / profile / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    stale = {}
    for py in sorted((root / "chapters").glob("[0-9][0-9]_*.py")):
        recorded = timings.get(py.stem, {}).get("code")
        now = code_hash(py, root / "params" / profile / f"{py.stem}.yaml", root, overrides)
        if recorded is None:
            stale[py.stem] = "never executed"
        elif recorded != now:
            stale[py.stem] = ("its source or parameters, the keys of the library components it uses, the source of "
                              "other library modules it imports, or an upstream chapter changed")
            unavailable = component_keys(root).get("unavailable") or next(
                (k for k in component_keys(root)["keys"].values() if k.startswith("unavailable")), None)
            if unavailable:
                stale[py.stem] += f" (note: {unavailable})"
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
