"""Chapters: Jupytext pairs in sync, parameters cells, the assignment's checks verbatim, papermill runs."""

import contextlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from run_chapters import declared_parameters  # noqa: E402

from diffusion_lib.chapter.params import check_chapter_parameters  # noqa: E402
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
from diffusion_lib.data.offline import shared_dir  # noqa: E402

SHARED = shared_dir()
SPEC = SHARED / "spec" / "assignment.md" if SHARED is not None else None


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_chapters():
    assert [p.stem for p in CHAPTERS][:3] == ["01_unet", "02_process", "03_train"]


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_pair_in_sync_and_clean(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync`"
    text_nb = jupytext.read(py)
    nb = nbformat.read(ipynb, as_version=4)
    assert _cells(text_nb) == _cells(nb), f"{py.name} and {ipynb.name} differ: run `make sync`"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit chapters without outputs"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_first_code_cell_is_parameters(py):
    nb = jupytext.read(py)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    assert "profile" in first.source and "results_dir" in first.source


@pytest.mark.parametrize("profile", ["quick", "cpu", "gpu"])
def test_every_profile_has_valid_parameters_for_every_chapter(profile):
    for py in CHAPTERS:
        f = ROOT / "params" / profile / f"{py.stem}.yaml"
        assert f.exists(), f
        params = yaml.safe_load(f.read_text())
        assert params["profile"] == profile and params["results_dir"] == f"results/{profile}"
        check_chapter_parameters(declared_parameters(py), params, source=str(f))


BAD_PARAMS = [
    ("03_train", {"n_sample": 4}, "did you mean 'n_samples'"),
    ("03_train", {"n_samples": "many"}, "n_samples: expected int"),
    ("03_train", {"n_samples": 0}, "n_samples: must be > 0"),
    ("03_train", {"train": {"steps": 0}}, "steps: must be > 0"),
    ("03_train", {"train": {"lr": -1}}, "lr: must be in (0, 1)"),
    ("03_train", {"train": {"batch_size": 0}}, "batch_size: must be > 0"),
    ("03_train", {"train": {"image_size": 30}}, "cannot be halved"),
    ("03_train", {"train": {"schedule": "sigmoid"}}, "schedule: must be one of"),
    ("03_train", {"train": {"dataset": "imagenet"}}, "dataset: must be one of"),
    ("04_schedules", {"schedules": ["linear", "sigmoid"]}, "unknown schedule(s) ['sigmoid']"),
    ("04_schedules", {"eval_sampler": {"method": "euler", "steps": 10}}, "unknown sampler 'euler'"),
    ("04_schedules", {"eval_sampler": {"method": "ddim", "steps": 2000}}, "integers in [1, 1000]"),
    ("04_schedules", {"eval_sampler": {"method": "ddim", "steps": 10, "eta": 2}}, "eta: must be in [0, 1]"),
    ("04_schedules", {"loss_t": [0, 1000]}, "loss_t: timesteps must be integers in [0, 999]"),
    ("04_schedules", {"seeds": [0]}, "at least two different training seeds"),
    ("05_recipe", {"base": {"steps": 0}}, "base.steps: must be > 0"),
    ("05_recipe", {"base": {"steps": 10}, "arms": {"fast": {"lr_decay": "step"}}}, "arms.fast.lr_decay: must be one of"),
    ("05_recipe", {"base": {"steps": 10}, "arms": {"fast": {"lr": 0.5}}, "combined": ["slow"]},
     "combined: must list arms of this study"),
    ("07_gan", {"gan": {"steps": -3}}, "gan.steps: must be > 0"),
    ("07_gan", {"gan": {"lr": 0}}, "gan.lr: must be in (0, 1)"),
    ("09_ddim", {"etas": [0.0, 1.5]}, "eta must lie in [0, 1]"),
    ("09_ddim", {"ddim_steps": [10, 0]}, "integers in [1, 1000]"),
    ("09_ddim", {"ddim_steps": [10, 1001]}, "integers in [1, 1000]"),
    ("09_ddim", {"spacing": "cubic"}, "unknown step spacing 'cubic'"),
    ("09_ddim", {"confirm_spacings": ["trailing", "cubic"]}, "confirm_spacings: unknown step spacing 'cubic'"),
    ("09_ddim", {"batch_size": 0}, "batch_size: must be > 0"),
]


@pytest.mark.parametrize("chapter,bad,needle", BAD_PARAMS, ids=[f"{c}-{next(iter(b))}" for c, b, _ in BAD_PARAMS])
def test_bad_chapter_parameters_are_rejected(chapter, bad, needle):
    from diffusion_lib.core.errors import ConfigError

    params = yaml.safe_load((ROOT / "params" / "quick" / f"{chapter}.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        check_chapter_parameters(declared_parameters(ROOT / "chapters" / f"{chapter}.py"), {**params, **bad}, "test")
    assert needle in str(err.value)


def test_runner_validates_every_file_before_running_anything(tmp_path):
    r = subprocess.run([sys.executable, "tools/run_chapters.py", "--profile", "quick", "--results-root", str(tmp_path),
                        "-p", "n_sample", "3"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: invalid parameters in params/quick/01_unet.yaml")
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "quick").exists()  # nothing written


def _check_cell(chapter: str, name: str) -> str:
    nb = jupytext.read(ROOT / "chapters" / f"{chapter}.py")
    return next(c.source for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source)


@pytest.mark.parametrize("chapter,name,line", [
    ("01_unet", "check_diffusion_model", "DiffusionModel implementation is correct!"),
    ("02_process", "check_diffusion_process", "DiffusionProcess implementation is correct!"),
])
def test_assignment_check_runs_verbatim(chapter, name, line):
    code = _check_cell(chapter, name)
    assert SPEC is not None and SPEC.exists(), "the assignment (shared/spec/assignment.md) was not found"
    # every line but the import is the assignment's own
    spec_lines = {ln.strip().removeprefix("In [ ]:").strip() for ln in SPEC.read_text().splitlines()}
    for ln in code.splitlines():
        s = ln.strip()
        if s and not s.startswith(("from diffusion_lib import", "#|")):  # the import, and Quarto's display options
            assert s in spec_lines, f"not in the assignment: {s!r}"
    out = io.StringIO()
    ns: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"<{chapter}>", "exec"), ns)
    assert line in out.getvalue()
    assert ns[name](ns["DiffusionModel" if "model" in name else "DiffusionProcess"]) is True


def _outputs(nb):
    for c in nb.cells:
        if c.cell_type == "code":
            yield from c.get("outputs", [])


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(str(o.data.get("text/markdown", "")) + str(o.data.get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
def test_quick_profile_runs_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "tools/run_chapters.py", "--profile", "quick", "--results-root", str(tmp_path),
                        "--only", "01", "02", "03"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "quick"
    for stem in ["01_unet", "02_process", "03_train"]:
        nb = nbformat.read(out / f"{stem}.ipynb", as_version=4)
        assert not [o for o in _outputs(nb) if o.output_type == "error"], stem
        assert "Traceback" not in _text(nb)
        assert "claim-warning" not in _text(nb)
        assert any(o.output_type == "display_data" and "image/png" in o.data for o in _outputs(nb)) or stem == "01_unet"
    assert "DiffusionModel implementation is correct!" in _text(nbformat.read(out / "01_unet.ipynb", 4))
    assert "DiffusionProcess implementation is correct!" in _text(nbformat.read(out / "02_process.ipynb", 4))
    text03 = _text(nbformat.read(out / "03_train.ipynb", 4))
    assert "Throughput:" in text03 and "images/s" in text03
    art = out / "03_train"
    assert (art / "model_ema.pt").exists() and (art / "metrics.csv").exists() and (art / "samples_final.png").exists()
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"01_unet", "02_process", "03_train"}


def test_failed_chapter_keeps_previous_results(tmp_path):
    out = tmp_path / "quick"
    out.mkdir()
    good = out / "01_unet.ipynb"
    good.write_text("previous good results")
    r = subprocess.run([sys.executable, "tools/run_chapters.py", "--profile", "quick", "--results-root", str(tmp_path),
                        "--only", "01", "-p", "train_config", "params/quick/no_such_file.yaml"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert good.read_text() == "previous good results"
    failed = out / "failed" / "01_unet.ipynb"
    assert failed.exists() and str(failed) in r.stderr
    assert "does not exist" in r.stderr  # the chapter's own error, in one line


def test_runner_rejects_unknown_chapter(tmp_path):
    r = subprocess.run([sys.executable, "tools/run_chapters.py", "--profile", "quick", "--results-root", str(tmp_path),
                        "--only", "99_nothing"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "no chapter named 99_nothing" in r.stderr


@pytest.mark.slow
def test_sigterm_stops_the_runner_cleanly(tmp_path):
    """SIGTERM mid-chapter: exit 130, one message, the partial notebook kept, no kernel traceback on the terminal."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "tools/run_chapters.py", "--profile", "quick", "--results-root",
                             str(tmp_path), "--only", "03"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "quick" / "03_train" / "checkpoints").exists():
        time.sleep(0.2)  # training has started inside the kernel
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "ZMQError" not in err, err
    assert "03_train interrupted" in err and (tmp_path / "quick" / "failed" / "03_train.ipynb").exists()
    assert not (tmp_path / "quick" / "03_train.ipynb").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_a_dead_kernel_task_nobody_awaits_prints_no_traceback_from_the_runner(quiet):
    """The race behind an interrupted run's stray traceback, reproduced without a kernel: a cell's polling task fails
    with DeadKernelError after the runner stopped awaiting it. asyncio reports it when the task is collected; the
    runner's filter drops that report (and only that one: the control run shows the report is really made)."""
    code = "\n".join([
        "import asyncio, gc, sys",
        f"sys.path.insert(0, {str(ROOT / 'tools')!r})",
        "import run_chapters",
        "from nbclient.exceptions import DeadKernelError",
        f"if {quiet}: run_chapters.quiet_dead_kernel_tasks()",
        "async def poll(): raise DeadKernelError('Kernel died')",
        "loop = asyncio.new_event_loop()",
        "task = loop.create_task(poll())",
        "loop.run_until_complete(asyncio.sleep(0.05))",
        "del task; gc.collect()",
        "loop.call_exception_handler({'message': 'another failure', 'exception': ValueError('kept')})",
    ])
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("DeadKernelError" in r.stderr) is not quiet, r.stderr
    assert "ValueError: kept" in r.stderr  # other asyncio reports still reach the terminal


def test_the_runner_installs_the_dead_kernel_filter(tmp_path):
    import logging

    sys.path.insert(0, str(ROOT / "tools"))
    import run_chapters

    log = logging.getLogger("asyncio")
    before, handler = list(log.filters), signal.getsignal(signal.SIGTERM)
    try:
        assert run_chapters.main(["--profile", "quick", "--results-root", str(tmp_path), "--only", "99_nothing"]) == 2
        assert any(isinstance(f, run_chapters._DeadKernelTasks) for f in log.filters)
    finally:
        log.filters[:] = before
        signal.signal(signal.SIGTERM, handler)


def test_make_report_executes_only_what_is_out_of_date_and_asks_before_a_long_run(tmp_path):
    """--stale-only skips a chapter executed with its code as it is now; --max-minutes executes nothing when the
    stale chapters' last executions took longer, and prints the command that executes them."""
    from staleness import code_hash

    out = tmp_path / "cpu"
    out.mkdir()
    nb = ROOT / "chapters" / "01_unet.ipynb"
    fresh = {"seconds": 5.0, "code": code_hash(nb, ROOT / "params" / "cpu" / "01_unet.yaml")}
    cmd = [sys.executable, "tools/run_chapters.py", "--profile", "cpu", "--results-root", str(tmp_path), "--only", "01",
           "--stale-only", "--max-minutes", "15"]

    (out / "timings.json").write_text(json.dumps({"01_unet": fresh}))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "nothing to execute" in r.stdout, r.stdout + r.stderr

    (out / "timings.json").write_text(json.dumps({"01_unet": {**fresh, "seconds": 20 * 60, "code": "0" * 16}}))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "01_unet (last executed in 20.0 min)" in r.stdout and "not executed now" in r.stdout
    assert "tools/run_chapters.py --profile cpu --only 01_unet" in r.stdout
    assert not (out / "01_unet.ipynb").exists()  # nothing ran

