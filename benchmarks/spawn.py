"""Each measurement in a fresh process: no compiled graph, allocator state or thread pool carries over."""

from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Any, Callable

__all__ = ["run_worker"]


def run_worker(target: Callable[..., None], args: tuple, what: str, poll_s: float = 5.0) -> dict[str, Any]:
    """Run ``target(*args, out)`` in a spawned process and return the dict it puts on ``out``.

    The worker reports its own exceptions as ``{"error": ...}``; a worker that dies without a word (killed for
    memory, a crash in a compiler) is noticed within ``poll_s`` seconds instead of being waited for.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    while True:
        try:
            res = out.get(timeout=poll_s)
            break
        except queue.Empty:
            if not p.is_alive():
                try:  # what it put just before exiting may still be in the pipe
                    res = out.get(timeout=1)
                    break
                except queue.Empty:
                    raise RuntimeError(f"{what} died (exit code {p.exitcode}) without a result") from None
    p.join()
    if "error" in res:
        raise RuntimeError(f"{what} failed: {res['error']}")
    return res
