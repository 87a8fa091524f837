"""The concatenated time embedding, computed with less work: an opt-in of the training and sampling programs.

:class:`~diffusion_lib.nets.blocks.ConcatResBlock` convolves the features
concatenated with the time embedding broadcast over H x W, as the assignment
reads. A convolution is linear in its input channels, so it splits into the
features' part and the embedding's part; the embedding's map is constant over
H x W, so its zero-padded 3x3 convolution takes only nine distinct values per
channel (interior, four edges, four corners). :class:`FastConcatResBlock`
convolves the embedding on a 3x3 map to get those nine and spreads them over
H x W: the same weights and the same function (a test compares both, values
and gradients), without a full-resolution convolution of the embedding's
channels in every block. :func:`use_fast_concat` switches a network's blocks to
it in place; ``TrainingRun`` and ``FastModel`` do so, the network as built does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConcatResBlock

__all__ = ["FastConcatResBlock", "use_fast_concat"]


def _border_index(n: int, device: torch.device) -> torch.Tensor:
    """Which of the three patterns (first, middle, last) each of ``n`` rows or columns takes: 0, 1, ..., 1, 2."""
    i = torch.arange(n, device=device)
    return (i > 0).long() + (i == n - 1).long()


class FastConcatResBlock(ConcatResBlock):
    """:class:`ConcatResBlock` whose first convolution never builds the broadcast time map."""

    def conv_with_time(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        H, W = h.shape[2], h.shape[3]
        if min(H, W) < 2:  # a 1-pixel map has no interior to share
            return super().conv_with_time(h, temb)
        c = h.shape[1]
        out = F.conv2d(h, self.conv1.weight[:, :c], self.conv1.bias, padding=1)
        small = temb[:, :, None, None].expand(-1, -1, 3, 3).to(h.dtype)
        t9 = F.conv2d(small, self.conv1.weight[:, c:].to(h.dtype), padding=1)  # (B, out, 3, 3): the nine patterns
        if torch.compiler.is_compiling() and not torch.is_grad_enabled():
            # in a compiled inference graph an index with constant indices fuses into the addition
            rows, cols = _border_index(H, h.device), _border_index(W, h.device)
            return out + t9[:, :, rows[:, None], cols[None, :]]
        # elsewhere slices and expands, whose backward is a slice and a sum (an index's is a scatter-add)
        t9 = torch.cat([t9[:, :, :1], t9[:, :, 1:2].expand(-1, -1, H - 2, -1), t9[:, :, 2:]], dim=2)
        return out + torch.cat([t9[:, :, :, :1], t9[:, :, :, 1:2].expand(-1, -1, -1, W - 2), t9[:, :, :, 2:]], dim=3)


def use_fast_concat(model: nn.Module) -> nn.Module:
    """Switch every :class:`ConcatResBlock` of ``model`` to :class:`FastConcatResBlock` (same weights); returns it."""
    for m in model.modules():
        if type(m) is ConcatResBlock:
            m.__class__ = FastConcatResBlock
    return model
