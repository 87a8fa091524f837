"""Gaussian noise that Python and JavaScript draw identically from the same seed.

The report's browser widget samples digits in the reader's browser; for a seed it
must start from the same ``x_T`` as Python does, so the two can be compared
number for number. Both sides use the same small generator: Mulberry32 (a
32-bit integer hash) for uniform numbers, reproduced bit for bit on 32-bit
unsigned patterns as JavaScript computes them, then the Box-Muller transform,
whose logarithm and sine/cosine may differ between the two maths libraries in
the last bit (``widget/sampler.js`` holds the twin).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mulberry32", "portable_normal"]

_MASK = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    """JavaScript's ``Math.imul``: the low 32 bits of the product (as an unsigned pattern)."""
    return (a * b) & _MASK


def mulberry32(seed: int):
    """Uniform numbers in [0, 1) from Mulberry32, as JavaScript's reference implementation computes them."""
    a = seed & _MASK
    while True:
        a = (a + 0x6D2B79F5) & _MASK
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & _MASK) ^ t
        yield ((t ^ (t >> 14)) & _MASK) / 4294967296.0


def portable_normal(seed: int, n: int) -> np.ndarray:
    """``n`` standard normal float32 numbers for ``seed`` (Box-Muller on consecutive Mulberry32 pairs)."""
    gen = mulberry32(seed)
    out = np.empty(n, dtype=np.float64)
    for i in range(0, n, 2):
        u1, u2 = next(gen), next(gen)
        r = math.sqrt(-2.0 * math.log(max(u1, 1e-300)))
        out[i] = r * math.cos(2.0 * math.pi * u2)
        if i + 1 < n:
            out[i + 1] = r * math.sin(2.0 * math.pi * u2)
    return out.astype(np.float32)
