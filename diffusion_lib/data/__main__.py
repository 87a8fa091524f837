"""``python -m diffusion_lib.data [ROOT]``: the project's data step (copy, verify, extract MNIST; link CIFAR-10)."""

from __future__ import annotations

import sys
from typing import Optional

from ..core.errors import DataError
from ..core.paths import resolve
from .cifar10 import prepare_cifar10
from .mnist import load_mnist


def main(argv: Optional[list[str]] = None) -> int:
    root = (argv if argv is not None else sys.argv[1:]) or ["data"]
    try:
        x, _ = load_mnist(root[0], train=True)
        xt, _ = load_mnist(root[0], train=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"MNIST ready in {resolve(root[0]) / 'MNIST'}: {len(x):,} training and {len(xt):,} test images")
    try:  # only chapter 08 needs CIFAR-10; its absence is reported, not fatal here
        print(f"CIFAR-10 ready: {prepare_cifar10(root[0])}")
    except DataError as exc:
        print(f"note: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
