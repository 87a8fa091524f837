"""Training runs as chapters use them: reuse a finished run when it can stand for the configuration, else train."""

from __future__ import annotations

from typing import Any, Callable

from ..core.paths import project_root, resolve
from ..training.config import TrainConfig
from ..training.log import read_summary
from ..training.run import reuse_problem, train

__all__ = ["train_or_reuse"]


def train_or_reuse(cfg: TrainConfig, retrain: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The summary of ``cfg``'s run: reused when it can stand for ``cfg``, else trained (or resumed) now.

    ``retrain`` starts over, moving the old run aside. A stale run that cannot be
    resumed is an error that says why, never silently overwritten.
    """
    out = resolve(cfg.out_dir)
    shown = out.relative_to(project_root()) if out.is_relative_to(project_root()) else out
    quiet = lambda *_: None  # noqa: E731 - the chapter reports the run from its summary
    if retrain:
        train(cfg, fresh=True, log=quiet)
        log(f"Trained the run in {shown} again, from scratch (the old run was moved aside).")
    elif reuse_problem(cfg) is None:
        log(f"Reusing the finished run in {shown} (set retrain=True to train again).")
    else:
        train(cfg, resume=True, log=quiet)
        log(f"Trained the run in {shown} now (its configuration or model code had no finished run to reuse).")
    return read_summary(out / "summary.json")
