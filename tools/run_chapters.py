"""Execute the chapters of a profile with papermill, in dependency order.

    python tools/run_chapters.py --profile quick [--only 03_train] [--results-root results]

For each ``chapters/NN_name.ipynb`` (in number order: chapter 03 trains the model
that later chapters load) this runs the equivalent of

    papermill chapters/NN_name.ipynb results/<profile>/NN_name.ipynb -f params/<profile>/NN_name.yaml

but writes to a temporary file first: the executed notebook replaces the
previous one only when every cell succeeded. A failed run leaves the old results
in place, keeps the failed notebook in ``results/<profile>/failed/`` and stops
(later chapters depend on earlier ones). Wall times go to
``results/<profile>/timings.json``, with the hash of what each execution depended on.

``make report`` runs it with ``--stale-only --max-minutes 15``: only the chapters
whose code or parameters changed since their recorded execution, and none of them
when their last executions took longer than that together (it prints the command
that executes them instead, and the book names them as out of date).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from diffusion_lib.chapter.evaluate import prune_unused  # noqa: E402
from diffusion_lib.chapter.params import check_chapter_parameters  # noqa: E402
from diffusion_lib.core.config import load_yaml  # noqa: E402
from diffusion_lib.core.devices import device_name  # noqa: E402
from diffusion_lib.core.errors import ConfigError  # noqa: E402
from diffusion_lib.core.files import atomic_write_text  # noqa: E402
from staleness import code_hash, stale_chapters  # noqa: E402

PROFILES = ("quick", "cpu", "gpu")


def chapters() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"{device_name('cpu')}, CPU"


def kernel_manager_logging_to(log: Path) -> type:
    """A kernel manager whose kernel writes its own stdout/stderr (its logs, not cell outputs) to ``log``.

    Cell outputs travel to the notebook as always. What the kernel process itself
    prints (start-up warnings, and the ZMQ tracebacks a kernel prints when it is
    shut down in the middle of a cell, as on Ctrl-C or SIGTERM) stays out of the
    runner's terminal; the log is kept beside a failed notebook.
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            with open(log, "ab") as fh:  # the kernel process inherits it; closed here once it is launched
                return await super().start_kernel(**{"stdout": fh, "stderr": fh, **kw})

    return LoggedKernelManager


class _DeadKernelTasks(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" report of a cell task that ended in ``DeadKernelError``.

    On Ctrl-C or SIGTERM the kernel is shut down under a cell that is still running; nbclient's polling task for
    that cell then fails with ``DeadKernelError`` and, since nobody awaits it any more, asyncio prints its
    traceback when it is collected, after the runner has already said in one line what happened. A kernel that dies
    on its own is reported by papermill's exception, which the runner prints as one line too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (type(exc).__name__ == "DeadKernelError"
                    and record.getMessage().startswith("Task exception was never retrieved"))


def quiet_dead_kernel_tasks() -> None:
    """Install :class:`_DeadKernelTasks` on asyncio's logger (the one its default exception handler writes to)."""
    logging.getLogger("asyncio").addFilter(_DeadKernelTasks())


def in_sync(nb_path: Path) -> bool:
    """Whether a chapter's notebook holds the same cells as its ``.py`` (what ``make sync`` guarantees)."""
    import jupytext
    import nbformat

    text, nb = jupytext.read(nb_path.with_suffix(".py")), nbformat.read(nb_path, as_version=4)
    return [(c.cell_type, c.source.strip()) for c in text.cells] == [(c.cell_type, c.source.strip()) for c in nb.cells]


_PROGRESS = ("\r", "it/s]", "s/it]", "%|")


def tidy_notebook(path: Path) -> None:
    """Make an executed notebook read as the book shows it.

    Papermill's injected-parameters cell gets Quarto's ``#| include: false`` (readers
    see the generated parameter table instead), and progress bars that reached the
    notebook's stderr (they belong on a terminal) are dropped, with no empty output left.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in cell.metadata.get("tags", []) and not cell.source.startswith("#| include:"):
            cell.source = "#| include: false\n" + cell.source
        cell.outputs = [o for o in cell.get("outputs", [])
                        if not (o.output_type == "stream" and o.name == "stderr" and any(m in o.text for m in _PROGRESS))
                        and not (o.output_type == "stream" and not o.text.strip())]
    nbformat.write(nb, path)


def declared_parameters(chapter: Path) -> dict:
    """Names and default values of the chapter's ``parameters`` cell, as papermill reads them (literals only)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(chapter.with_suffix(".ipynb")))
    if not declared:
        raise ConfigError(f"{chapter.name} has no cell tagged 'parameters'")
    return {name: ast.literal_eval(p["default"]) for name, p in declared.items()}


def run(profile: str, only: list[str] | None, results_root: Path, extra: dict, stale_only: bool = False,
        max_minutes: float | None = None) -> int:
    import papermill as pm

    # The kernels inherit this environment. A non-interactive MPLBACKEND (CI sets Agg for the
    # tests) would make plt.show() in a kernel display nothing, and the report would lose its
    # figures; the kernels always get Jupyter's inline backend.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

    todo = chapters()
    if only:
        wanted = set(only)
        todo = [p for p in todo if p.stem in wanted or p.stem[:2] in wanted]
        missing = wanted - {p.stem for p in todo} - {p.stem[:2] for p in todo}
        if missing:
            print(f"error: no chapter named {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
    param_files = {p: ROOT / "params" / profile / f"{p.stem}.yaml" for p in todo}
    absent = [str(f.relative_to(ROOT)) for f in param_files.values() if not f.exists()]
    if absent:
        print(f"error: profile {profile!r} has no parameter file for: {', '.join(absent)}", file=sys.stderr)
        return 2
    unsynced = [nb.name for nb in todo if not in_sync(nb)]
    if unsynced:
        print(f"error: {', '.join(unsynced)} differ from their .py (the source the run is recorded against); "
              "run `make sync` first", file=sys.stderr)
        return 2
    out_dir = results_root / profile
    # every parameter file is checked before anything runs or is written
    all_params, errors = {}, []
    for nb in todo:
        try:
            params = load_yaml(param_files[nb])
            # the chapters write their artifacts where this run puts its notebooks
            params["results_dir"] = str(out_dir.relative_to(ROOT)) if out_dir.is_relative_to(ROOT) else str(out_dir)
            params.update(extra)
            check_chapter_parameters(declared_parameters(nb.with_suffix(".py")), params,
                                     source=str(param_files[nb].relative_to(ROOT)))
            all_params[nb] = params
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        print("error: " + "\n".join(errors), file=sys.stderr)
        return 2
    timings_path = out_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if stale_only:
        stale = stale_chapters(profile, results_root=results_root, overrides=extra)
        todo = [nb for nb in todo if nb.stem in stale]
        if not todo:
            print(f"[{profile}] every chapter is up to date with its code and parameters: nothing to execute")
            return 0
        # a chapter never executed in this profile has no recorded cost: it runs (the profile's budget is all we know)
        last = {nb.stem: timings[nb.stem]["seconds"] / 60 for nb in todo if nb.stem in timings}
        minutes = sum(last.values())
        print(f"[{profile}] out of date: " + ", ".join(
            f"{nb.stem} ({f'last executed in {last[nb.stem]:.1f} min' if nb.stem in last else 'never executed'})"
            for nb in todo))
        if max_minutes is not None and minutes > max_minutes:
            why = f"their last executions took {minutes:.0f} min together, more than {max_minutes:g}"
            print(f"[{profile}] not executed now: {why}; the report is rendered from the results there are, and "
                  "names them as out of date.\n"
                  f"  to re-execute them: .venv/bin/python tools/run_chapters.py --profile {profile} --only "
                  + " ".join(nb.stem for nb in todo))
            return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for leftover in out_dir.glob(".*.running.ipynb"):  # from a run that was killed outright
        (out_dir / "failed").mkdir(exist_ok=True)
        os.replace(leftover, out_dir / "failed" / leftover.name.removeprefix(".").replace(".running", ""))
    for nb in todo:
        params = all_params[nb]
        final = out_dir / nb.name
        tmp = out_dir / f".{nb.stem}.running.ipynb"
        kernel_log = out_dir / f".{nb.stem}.kernel.log"
        kernel_log.unlink(missing_ok=True)
        print(f"[{profile}] {nb.stem}: executing -> {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final}",
              flush=True)
        code = code_hash(nb, param_files[nb], overrides=extra)  # what this execution runs, taken before it starts
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(tmp), parameters=params, cwd=str(ROOT), kernel_name="python3",
                                progress_bar=sys.stderr.isatty(), request_save_on_cell_execute=True,
                                kernel_manager_class=kernel_manager_logging_to(kernel_log))
        except BaseException as exc:  # a failing cell, a dead kernel, or Ctrl-C
            failed = out_dir / "failed" / nb.name
            failed.parent.mkdir(exist_ok=True)
            if tmp.exists():
                os.replace(tmp, failed)
            if kernel_log.exists():
                os.replace(kernel_log, failed.with_suffix(".kernel.log"))
            kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            print(f"[{profile}] {nb.stem} {kind}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}\n"
                  f"  the previous results are untouched; the partial notebook is {failed}", file=sys.stderr)
            return 130 if kind == "interrupted" else 1
        seconds = time.perf_counter() - t0
        kernel_log.unlink(missing_ok=True)
        tidy_notebook(tmp)
        os.replace(tmp, final)
        timings[nb.stem] = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "machine": machine(), "code": code}
        atomic_write_text(timings_path, json.dumps(timings, indent=2) + "\n")
        print(f"[{profile}] {nb.stem}: done in {seconds / 60:.1f} min", flush=True)
    if todo == chapters() and not extra:  # every chapter ran as the profile says: what none of them used is stale
        try:
            for f in prune_unused(out_dir, started):
                print(f"[{profile}] removed {f.relative_to(out_dir)}: a sample set no chapter uses any more")
        except OSError as exc:
            print(f"[{profile}] note: unused sample sets were not all removed ({exc})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=PROFILES)
    ap.add_argument("--only", nargs="*", help="chapter names or numbers (default: all)")
    ap.add_argument("--results-root", default=str(ROOT / "results"), help="where <profile>/ results go")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "YAML_VALUE"),
                    help="override a parameter in every chapter")
    ap.add_argument("--stale-only", action="store_true",
                    help="execute only the chapters whose code or parameters changed since their recorded execution")
    ap.add_argument("--max-minutes", type=float, metavar="M",
                    help="with --stale-only: if those chapters' last executions took more than M minutes together, "
                         "execute none of them and print the command that does")
    args = ap.parse_args(argv)
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in args.param}

    # SIGTERM ends a run like Ctrl-C (KeyboardInterrupt): the partial notebook is kept in failed/
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    quiet_dead_kernel_tasks()
    return run(args.profile, args.only, Path(args.results_root).resolve(), extra, args.stale_only, args.max_minutes)


if __name__ == "__main__":
    sys.exit(main())
