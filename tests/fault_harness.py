"""Fault points for the kill-anywhere tests, set from outside the program under test.

    python tests/fault_harness.py diffusion_lib.train --config FILE ...

runs the module as ``python -m`` would, after wrapping what the program's durable
writes and its training loop call, so that no production module reads a test switch:

- ``os.fsync`` of a temporary file ``.<name>.<random>.tmp``: ``write <name>: written,
  not synced`` before it, ``write <name>: synced, not renamed`` after it;
- ``os.replace``: ``write <name>: done`` once a temporary file has become ``<name>``;
  ``move <name> to <b>`` once the file a synced temporary file is about to replace was
  kept (``last.pt`` as ``prev.pt``); other renames (data set-up, a damaged checkpoint
  moved aside) are not points, as they were not in the program's own writes;
- ``DiffusionProcess.train_step``: ``training step done`` after every step.

``DIFFUSION_KILL_AT=N`` sends the process SIGKILL at the N-th point it reaches (counting
from 1), as ``kill -9`` would; ``DIFFUSION_FAULT_LOG=FILE`` appends every point's number
and name to FILE, so a test can count the points of a whole run and pick where to strike.
"""

import os
import re
import runpy
import signal
import stat
import sys
from pathlib import Path

KILL_AT = int(os.environ.get("DIFFUSION_KILL_AT", "0") or 0)
LOG = os.environ.get("DIFFUSION_FAULT_LOG", "")
TEMP = re.compile(r"^\.(.+)\.[^.]+\.tmp$")  # core.files.temp_file_beside's names
_count = 0
_pending = ""  # the target of the temporary file synced last, until it is renamed


def point(name: str) -> None:
    global _count
    _count += 1
    if LOG:
        with open(LOG, "a") as fh:
            fh.write(f"{_count}\t{name}\n")
    if _count == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(fd: int, _real=os.fsync) -> None:
    global _pending
    temp = None if stat.S_ISDIR(os.fstat(fd).st_mode) else TEMP.match(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
    if temp:
        point(f"write {temp[1]}: written, not synced")
    _real(fd)
    if temp:
        _pending = temp[1]
        point(f"write {temp[1]}: synced, not renamed")


def _replace(src, dst, *a, _real=os.replace, **kw) -> None:
    global _pending
    _real(src, dst, *a, **kw)
    src, dst = Path(src), Path(dst)
    if TEMP.match(src.name):
        _pending = ""
        point(f"write {dst.name}: done")
    elif src.name == _pending:
        point(f"move {src.name} to {dst.name}")


def main() -> None:
    os.fsync, os.replace = _fsync, _replace
    from diffusion_lib.training.process import DiffusionProcess

    step = DiffusionProcess.train_step

    def train_step(self, *a, **kw):
        loss = step(self, *a, **kw)
        point("training step done")
        return loss

    DiffusionProcess.train_step = train_step
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
