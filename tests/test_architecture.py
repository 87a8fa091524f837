"""The library's shape: layers that import only downwards, no import circles, no hidden imports; staleness by dependency."""

import ast
import glob
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import staleness
from staleness import code_hash, library_dependencies, upstream_chapters

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "diffusion_lib"

# each layer and the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "nets": {"core"},
    "diffusion": {"core", "nets"},
    "training": {"core", "data", "nets", "diffusion"},
    "evaluation": {"core", "data", "nets", "diffusion"},
    "chapter": {"core", "data", "nets", "diffusion", "training", "evaluation"},
}
# imports that may sit inside a function: optional dependencies only
OPTIONAL = {"diffusers", "onnx", "onnxruntime", "resource"}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in LIB.rglob("*.py")}


def _imports(name: str, path: Path) -> list[tuple[str, ast.AST]]:
    """(absolute module name, node) for every project import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            found.append((f"{base}.{node.module}" if node.module else base, node))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffusion_lib"):
            found.append((node.module, node))
        elif isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names if a.name.startswith("diffusion_lib")]
    return found


def test_every_module_belongs_to_a_layer():
    loose = [n for n in _modules() if n.count(".") == 1 and n.split(".")[1] not in ALLOWED
             and n not in ("diffusion_lib.train", "diffusion_lib.sample", "diffusion_lib.export")]
    assert not loose, f"modules outside the layers: {loose}"


def test_layers_import_only_downwards():
    bad = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue  # the package's front door (__init__, the train entry point) may import anything
        layer = parts[1]
        for target, _ in _imports(name, path):
            t = target.split(".")
            if len(t) >= 2 and t[1] in ALLOWED and t[1] != layer and t[1] not in ALLOWED[layer]:
                bad.append(f"{name} imports {target} ({layer} -> {t[1]})")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    mods = _modules()
    graph = {n: {t for t, _ in _imports(n, p) if t in mods and t != n} for n, p in mods.items()}
    # importing a package runs its __init__, but the package's own __init__ importing its submodules is not a circle
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_no_hidden_imports():
    hidden = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                mod = (node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name
                project = isinstance(node, ast.ImportFrom) and node.level > 0  # a relative import is never optional
                if project or mod.split(".")[0] not in OPTIONAL:
                    hidden.append(f"{name}: line {node.lineno} imports {mod or '.'} inside a function or block")
    assert not hidden, "\n".join(hidden)


def _copy_project(tmp_path: Path) -> Path:
    """What the chapters' keys read (a key that cannot be computed would make every hash new each time)."""
    from test_keys import _project

    return _project(tmp_path)


def _clear() -> None:
    """Forget the hashes and component keys computed so far (the files changed)."""
    staleness._hash.cache_clear()
    staleness.component_keys.cache_clear()


def test_the_interpolation_chapter_depends_on_what_it_imports_only():
    deps = {p.relative_to(ROOT).as_posix() for p in library_dependencies(ROOT / "chapters/06_interpolation.py")}
    assert "diffusion_lib/diffusion/samplers.py" in deps and "diffusion_lib/diffusion/interpolation.py" in deps
    # the package's __init__ only gathers names: importing a submodule does not depend on all it imports
    assert "diffusion_lib/__init__.py" not in deps
    assert "diffusion_lib/evaluation/gan.py" not in deps and "diffusion_lib/training/run.py" not in deps
    assert upstream_chapters(ROOT / "chapters/06_interpolation.py") == ["03_train"]


def test_changing_a_module_a_chapter_does_not_import_leaves_it_fresh(tmp_path):
    proj = _copy_project(tmp_path)
    _clear()
    ch_interp, p_interp = proj / "chapters/06_interpolation.py", proj / "params/cpu/06_interpolation.yaml"
    ch_gan, p_gan = proj / "chapters/07_gan.py", proj / "params/cpu/07_gan.yaml"
    before_interp, before_gan = code_hash(ch_interp, p_interp, proj), code_hash(ch_gan, p_gan, proj)
    gan = proj / "diffusion_lib/evaluation/gan.py"
    gan.write_text(gan.read_text() + "\nA_CHANGE_CHAPTER_06_CANNOT_SEE = 1\n")
    _clear()
    assert code_hash(ch_interp, p_interp, proj) == before_interp
    assert code_hash(ch_gan, p_gan, proj) != before_gan  # chapter 07 imports the GAN


@pytest.mark.parametrize("changed", ["diffusion_lib/diffusion/samplers.py", "chapters/03_train.py",
                                     "params/cpu/03_train.yaml", "params/cpu/06_interpolation.yaml"])
def test_a_change_the_interpolation_chapter_depends_on_makes_it_stale(tmp_path, changed):
    proj = _copy_project(tmp_path)
    ch_interp, p_interp = proj / "chapters/06_interpolation.py", proj / "params/cpu/06_interpolation.yaml"
    _clear()
    before = code_hash(ch_interp, p_interp, proj)
    f = proj / changed
    # a change of what the library computes, of a value in a parameter file, of any text in a chapter
    if changed.startswith("diffusion_lib"):
        f.write_text(f.read_text().replace("eps = model(x, tt).float()", "eps = 0.5 * model(x, tt).float()"))
    else:
        f.write_text(f.read_text() + ("\nchanged: 1\n" if f.suffix == ".yaml" else "\n# changed\n"))
    _clear()
    assert code_hash(ch_interp, p_interp, proj) != before


def test_how_a_file_is_written_leaves_every_chapter_fresh(tmp_path):
    """A new Jupytext version header, a parameter file's comment lines, and comments, docstrings and layout in the
    library change no chapter's hash."""
    proj = _copy_project(tmp_path)
    _clear()
    pairs = {py.stem: (py, proj / "params/cpu" / f"{py.stem}.yaml") for py in (proj / "chapters").glob("[0-9][0-9]_*.py")}
    before = {stem: code_hash(*pair, proj) for stem, pair in pairs.items()}
    for py, _ in pairs.values():
        text = py.read_text()
        assert "jupytext_version: " in text
        py.write_text(re.sub(r"jupytext_version: \S+", "jupytext_version: 9.9.9", text))
    for _, par in pairs.values():
        par.write_text("# a comment on the budget\n" + par.read_text().replace("\n", "  \n", 1))
    samplers = proj / "diffusion_lib/diffusion/samplers.py"
    text = samplers.read_text()
    tree = ast.parse(text)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and ast.get_docstring(n))
    lines = text.splitlines()
    doc = fn.body[0]
    lines[doc.lineno - 1:doc.end_lineno] = ['    """Another docstring."""']
    lines = [ln + "  # a comment" if ln.strip().startswith("return ") else ln for ln in lines]
    samplers.write_text("# a comment\n\n\n" + "\n".join(lines) + "\n")
    _clear()
    assert {stem: code_hash(*pair, proj) for stem, pair in pairs.items()} == before
    paths = proj / "diffusion_lib/evaluation/paths.py"  # no probe covers it: its code counts by its source
    paths.write_text(paths.read_text() + "\nCHANGED = 1\n")
    _clear()
    assert code_hash(*pairs["06_interpolation"], proj) != before["06_interpolation"]


def _other_pythons() -> list[str]:
    """Python 3.10+ interpreters on this machine other than the one running the tests (pyenv's included)."""
    found = {shutil.which(f"python3.{m}") for m in range(10, 15)}
    found |= set(glob.glob(str(Path.home() / ".pyenv/versions/3.1*/bin/python")))
    versions = {}
    for exe in sorted(p for p in found if p):
        r = subprocess.run([exe, "-c", "import sys; print(tuple(sys.version_info[:2]))"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() != str(tuple(sys.version_info[:2])):
            versions.setdefault(r.stdout.strip(), exe)  # one interpreter per version (a shim that fails is skipped)
    return [exe for v, exe in versions.items() if ast.literal_eval(v) >= (3, 10)]


def test_every_python_computes_the_same_hashes():
    """The recorded hashes were computed by one Python; any other supported Python must agree (ast.unparse would not)."""
    others = _other_pythons()
    if not others:
        pytest.skip("no other Python 3.10+ on this machine")
    # the component keys come from PyTorch, which the other interpreters lack: they are given, the rest is computed
    keys = json.dumps(staleness.component_keys(ROOT))
    code = ("import sys, json; sys.path.insert(0, 'tools'); from pathlib import Path; import staleness; "
            f"staleness.component_keys = lambda root: json.loads({keys!r}); "
            "print([staleness.code_hash(p, Path('params/cpu') / (p.stem + '.yaml')) "
            "for p in sorted(Path('chapters').glob('[0-9][0-9]_*.py'))])")
    here = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for exe in others:
        assert subprocess.run([exe, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout == here, exe
