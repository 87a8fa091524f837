"""Training runs as chapters use them: reuse a finished run when it can stand for the configuration, else train."""

from __future__ import annotations

from typing import Any, Callable

from ..core.paths import project_root, resolve
from ..training.config import TrainConfig
from ..training.log import read_summary
from ..training.run import STALE, reuse_verdict, train

__all__ = ["train_or_reuse"]


def train_or_reuse(cfg: TrainConfig, retrain: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The summary of ``cfg``'s run: reused when it can stand for ``cfg``, else trained now.

    A run with too few steps (or none yet) is continued from its checkpoints; a run
    trained with other parameters or by other model code, or with too few steps and
    no checkpoint, is trained again from scratch, the old run moved aside (never
    deleted), as is any run with ``retrain``.
    """
    out = resolve(cfg.out_dir)
    shown = out.relative_to(project_root()) if out.is_relative_to(project_root()) else out
    quiet = lambda *_: None  # noqa: E731 - the chapter reports the run from its summary
    verdict = None if retrain else reuse_verdict(cfg)
    why = "" if verdict is None else verdict[1].replace(str(out), str(shown))  # the book shows project paths
    # a finished run with too few steps continues from its checkpoints; a clone has none (they are not committed)
    no_checkpoint = not any((out / "checkpoints" / n).exists() for n in ("last.pt", "prev.pt"))
    if retrain or (verdict is not None and (verdict[0] in STALE or verdict[0] == "steps" and no_checkpoint)):
        train(cfg, fresh=True, log=quiet)
        log(f"Trained the run in {shown} from scratch ({'retrain=True' if retrain else why}); "
            "the old run, if any, was moved aside.")
    elif verdict is None:
        log(f"Reusing the finished run in {shown} (set retrain=True to train again).")
    else:
        train(cfg, resume=True, log=quiet)
        log(f"Trained the run in {shown} now ({why}), continuing from its last checkpoint where it had one.")
    return read_summary(out / "summary.json")
