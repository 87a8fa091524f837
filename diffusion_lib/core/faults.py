"""Fault injection: named points at which a test can make the process die, as ``kill -9`` would.

The kill-anywhere test runs the training program with ``DIFFUSION_KILL_AT=N``:
the N-th fault point the process reaches (counting from 1) sends it SIGKILL,
with no chance to clean up. ``DIFFUSION_FAULT_LOG=FILE`` appends the name of
every point reached to FILE, so a test can count the points of a whole run and
pick where to strike. Unarmed (the normal case), a fault point costs one
comparison.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_point"]

_KILL_AT = int(os.environ.get("DIFFUSION_KILL_AT", "0") or 0)
_LOG = os.environ.get("DIFFUSION_FAULT_LOG", "")
_count = 0


def fault_point(name: str) -> None:
    """Count this point; die here with SIGKILL if it is the one the environment armed."""
    global _count
    if not (_KILL_AT or _LOG):
        return
    _count += 1
    if _LOG:
        with open(_LOG, "a") as fh:
            fh.write(f"{_count}\t{name}\n")
    if _count == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
