"""The keys: what the library computes decides what is stale, not how its code is written."""

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import staleness
from diffusion_lib.chapter import keys as K

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.py"))


def test_every_function_of_a_component_runs_in_its_probe():
    """A function no probe runs could change what the library computes without changing a key."""
    called = set()

    def on_call(frame, event, arg):
        if event == "call":
            called.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))

    for mods in K.COMPONENTS.values():  # a cached function (lru_cache) would answer without running
        for m in mods:
            for obj in vars(importlib.import_module("diffusion_lib." + m[:-3].replace("/", "."))).values():
                if callable(getattr(obj, "cache_clear", None)):
                    obj.cache_clear()
    sys.setprofile(on_call)
    try:
        for c in K.COMPONENTS:
            K.probe(c)
    finally:
        sys.setprofile(None)

    def functions(code):
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                if c.co_flags & inspect.CO_NEWLOCALS:  # a function (a class body is not)
                    yield c
                yield from functions(c)

    missed = []
    for mods in K.COMPONENTS.values():
        for m in mods:
            mod = importlib.import_module("diffusion_lib." + m[:-3].replace("/", "."))
            text = Path(mod.__file__).read_text()
            lines = text.splitlines()
            for code in functions(compile(text, mod.__file__, "exec")):
                name = f"{Path(m).stem}.{code.co_qualname}"
                head = " ".join(lines[code.co_firstlineno - 1:code.co_firstlineno + 1])
                if any(name == u or name.startswith(u + ".") for u in K.UNPROBED) or "pragma: no cover" in head:
                    continue
                if (mod.__file__, code.co_firstlineno) not in called:
                    missed.append(f"{name} (line {code.co_firstlineno})")
    assert not missed, "no probe runs: " + ", ".join(missed)
    assert all(any(u.startswith(Path(m).stem + ".") for mods in K.COMPONENTS.values() for m in mods)
               for u in K.UNPROBED)


def test_the_keys_are_the_same_with_avx2_and_avx512_kernels():
    """PyTorch picks its CPU kernels by the instruction set (AVX2 on older x86 machines, AVX512 on newer ones); the
    keys, computed in float64 and rounded, must not change with it, or a chapter would be stale on another CPU."""
    def keys_with(capability):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability} if capability else dict(os.environ)
        r = subprocess.run([sys.executable, "-m", "diffusion_lib.chapter.keys"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)["keys"]

    native, avx2 = keys_with(None), keys_with("avx2")
    assert native == avx2
    assert not any(v.startswith("unavailable") for v in native.values()), native


def _project(tmp_path: Path) -> Path:
    """A copy of what the keys and the chapters' hashes read (the data linked, not copied)."""
    dst = tmp_path / "proj"
    for sub in ("chapters", "params", "diffusion_lib", "results/instruments"):
        shutil.copytree(ROOT / sub, dst / sub, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    shutil.copy(ROOT / "pyproject.toml", dst)
    if (ROOT / "data").is_dir():
        os.symlink(ROOT / "data", dst / "data")
    return dst


def _hashes(proj: Path) -> dict[str, str]:
    staleness._hash.cache_clear()
    staleness.component_keys.cache_clear()
    return {stem: staleness.code_hash(proj / "chapters" / f"{stem}.py", proj / "params/cpu" / f"{stem}.yaml", proj)
            for stem in CHAPTERS}


def _edit(f: Path, old: str, new: str, count: int = 1) -> None:
    text = f.read_text()
    assert text.count(old) >= count, f"{old!r} not in {f}"
    f.write_text(text.replace(old, new))


def _using(proj: Path, component: str) -> set[str]:
    mods = set(staleness.component_keys(proj)["modules"][component])
    return {stem for stem in CHAPTERS if any(
        f.relative_to(proj / "diffusion_lib").as_posix() in mods
        for f in staleness.library_dependencies(proj / "chapters" / f"{stem}.py", proj))}


def test_a_rename_a_move_and_a_reformatting_leave_every_chapter_fresh(tmp_path):
    proj = _project(tmp_path)
    before = _hashes(proj)
    lib = proj / "diffusion_lib"
    # a private rename
    samplers = lib / "diffusion/samplers.py"
    samplers.write_text(re.sub(r"\b_alpha_bar\b", "_cumulative_alpha", samplers.read_text()))
    # a function moved between modules: the geometry check from the U-Net's module to the blocks'
    unet, blocks = lib / "nets/unet.py", lib / "nets/blocks.py"
    text = unet.read_text()
    start, end = text.index("def geometry_problem("), text.index("@dataclass(frozen=True)\nclass UNetConfigBase")
    unet.write_text(text[:start] + text[end:])
    blocks.write_text(blocks.read_text() + "\n\n" + text[start:end].rstrip() + "\n")
    _edit(unet, "from .blocks import SelfAttention,", "from .blocks import SelfAttention, check_geometry, geometry_problem,")
    # a reformatting: comments, blank lines, a docstring
    process = lib / "training/process.py"
    process.write_text("# reformatted\n\n" + process.read_text().replace("\n\n\n", "\n\n\n\n").replace(
        '"""DDPM (Ho et al. 2020) around a noise-prediction model.', '"""DDPM around a noise-prediction model.'))
    assert _hashes(proj) == before


def _stale_after(proj: Path, change) -> set[str]:
    """The chapters whose hash ``change()`` (an edit of the project copy) changes."""
    before = _hashes(proj)
    change()
    after = _hashes(proj)
    return {stem for stem in CHAPTERS if after[stem] != before[stem]}


def test_an_edit_to_a_unet_block_makes_stale_the_chapters_that_build_unets(tmp_path):
    proj = _project(tmp_path)
    stale = _stale_after(proj, lambda: _edit(proj / "diffusion_lib/nets/blocks.py",
                                             "h = self.conv2(self.dropout(F.silu(self.norm2(h))))",
                                             "h = self.conv2(self.dropout(F.gelu(self.norm2(h))))"))
    assert stale == _using(proj, "network") and "03_train" in stale  # 02 builds a DiffusionProcess: a U-Net


def test_an_edit_to_the_fid_code_makes_stale_only_the_chapters_that_measure(tmp_path):
    proj = _project(tmp_path)
    stale = _stale_after(proj, lambda: _edit(proj / "diffusion_lib/evaluation/quality.py",
                                             "s1, s2 = torch.cov(f1.T), torch.cov(f2.T)",
                                             "s1, s2 = torch.cov(f1.T, correction=0), torch.cov(f2.T, correction=0)"))
    assert stale == _using(proj, "instrument") == {"04_schedules", "05_recipe", "06_interpolation", "07_gan",
                                                    "08_cifar10", "09_ddim", "10_guidance"}


def test_an_edit_to_the_conditional_network_makes_stale_only_the_chapter_that_guides(tmp_path):
    """The conditional U-Net lives in the network's module, but only the guidance probe runs it."""
    proj = _project(tmp_path)
    stale = _stale_after(proj, lambda: _edit(proj / "diffusion_lib/nets/concat_unet.py", "+ self.label_embed(y))",
                                             "+ 2 * self.label_embed(y))"))
    assert stale == _using(proj, "guidance") == {"10_guidance"}


def test_the_keys_module_s_imports_are_its_probes_not_a_chapter_s_dependencies():
    """Chapter 05 uses the keys (its evaluation cache), not every component the keys module imports to probe."""
    deps = staleness.library_dependencies(ROOT / "chapters" / "05_recipe.py")
    assert ROOT / "diffusion_lib" / "chapter" / "keys.py" in deps
    assert ROOT / "diffusion_lib" / "diffusion" / "guidance.py" not in deps
    assert ROOT / "diffusion_lib" / "diffusion" / "guidance.py" in staleness.library_dependencies(
        ROOT / "chapters" / "10_guidance.py")


def test_a_chapter_s_prose_is_its_own_and_its_code_reaches_its_readers(tmp_path):
    """A Markdown cell of chapter 03 makes only 03 stale; its code, every chapter that reads 03's artifacts."""
    proj = _project(tmp_path)
    chapter = proj / "chapters/03_train.py"
    readers = {stem for stem in CHAPTERS if "03_train" in staleness.upstream_chapters(proj / "chapters" / f"{stem}.py")}
    assert _stale_after(proj, lambda: _edit(chapter, "# Training follows Algorithm 1", "# Training is Algorithm 1")) \
        == {"03_train"}
    assert _stale_after(proj, lambda: _edit(chapter, "sample_seed = 1234", "sample_seed = 4321")) \
        == {"03_train"} | readers
    assert {"05_recipe", "09_ddim"} <= readers


def test_a_key_that_cannot_be_computed_makes_its_chapters_stale(tmp_path):
    proj = _project(tmp_path)
    stale = _stale_after(proj, (proj / "results/instruments/mnist_classifier.pt").unlink)
    assert stale == _using(proj, "instrument")
    assert staleness.component_keys(proj)["keys"]["instrument"].startswith("unavailable")


def test_the_keys_program_prints_the_keys_and_modules():
    r = subprocess.run([sys.executable, "-m", "diffusion_lib.chapter.keys", "network"], cwd=ROOT, capture_output=True,
                       text=True, check=True)
    out = json.loads(r.stdout)
    assert out["keys"] == {"network": K.component_key("network")}
    assert out["modules"]["network"] == list(K.COMPONENTS["network"])
    with pytest.raises(SystemExit):
        K.main(["nonsense"])
