"""A trained network prepared for sampling: the same ``model(x_t, t) -> eps``, run faster.

Sampling calls the network hundreds of times without gradients, so the
backend (how the network is run) matters more than anything else in a
sampler's cost. The backends, each measured in the benchmark
(``python -m benchmarks.sampling``):

- ``eager``: float32, PyTorch eager, ``torch.inference_mode`` (the reference);
- ``bf16``: bf16 autocast where the hardware computes bf16 natively (a GPU, or a
  CPU with AVX512-BF16/AMX); float32 elsewhere, and it says so;
- ``compiled-bf16``: ``torch.compile`` (Inductor: fused GroupNorm+SiLU and
  friends, C++/Triton kernels) under bf16 autocast;
- ``frozen-bf16``: the same with Inductor's *freezing*: the weights become
  constants of the compiled graph, so it folds their bf16 casts and pre-packs
  them for oneDNN's convolutions once instead of at every call (inference only:
  the network must not change after the first call; compiling takes longer);
- ``onnxruntime``: the network exported to ONNX and run by ONNX Runtime (float32).

A backend returns float32 noise predictions whatever it computes in, so the
samplers' arithmetic is unchanged. Whether a faster backend keeps quality is
measured, not assumed: the benchmark compares its FID with float32's bootstrap
interval at the same N, and the profiles use only backends that passed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch._inductor import config as inductor_config

from ..core.devices import cpu_has_native_bf16
from .fast import use_fast_concat
from .onnx import OnnxModel, export_onnx
from .unet import UNet

__all__ = ["BACKENDS", "FastModel", "bf16_native"]

BACKENDS = ("eager", "bf16", "compiled-bf16", "frozen-bf16", "onnxruntime")
_BF16 = ("bf16", "compiled-bf16", "frozen-bf16")
_FALLBACK = {"bf16": "eager", "compiled-bf16": "compiled-fp32", "frozen-bf16": "frozen-fp32"}


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native (fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def _own_entry(model: UNet) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model`` called through a function of its own, for frozen-bf16.

    Dynamo caches compiled graphs per code object and guards them on the module, not on Inductor's config, so
    compiling the module itself would find the graph compiled-bf16 left for it (unfrozen) and run that. This
    function's code has a cache of its own: the frozen graph compiles once per module and batch size, and
    compiled-bf16 and frozen-bf16 of one module coexist in a process. (``torch.compile(options={"freezing": True})``
    is no way round it in torch 2.14: measured, its graph is not frozen.)
    """

    def forward(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t)

    return forward


class FastModel:
    """``model(x_t, t) -> eps`` (float32) through a backend; exposes the network's ``config`` like the network.

    It switches ``model``'s blocks to :mod:`~diffusion_lib.nets.fast` (in place: the same weights and function).
    """

    training = False

    def __init__(self, model: UNet, backend: str = "eager", log: Callable[[str], None] = print) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown sampling backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.network = use_fast_concat(model.eval())  # the same function, computed with less work
        self.config = model.config
        self.device = next(model.parameters()).device
        self.requested = backend
        self.bf16 = backend in _BF16 and bf16_native(self.device)
        if backend in _BF16 and not self.bf16:
            log(f"sampling backend {backend}: no native bf16 on {self.device.type}; running in float32")
        self.backend = backend if self.bf16 or backend not in _BF16 else _FALLBACK[backend]
        self.frozen = backend == "frozen-bf16"
        self._run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if backend == "onnxruntime":
            self._run = self._onnx(model)
        elif backend == "compiled-bf16":
            self._run = torch.compile(model, dynamic=False)
        elif backend == "frozen-bf16":
            self._run = torch.compile(_own_entry(model), dynamic=False)
        else:
            self._run = model

    def _onnx(self, model: UNet) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        self._tmp = tempfile.TemporaryDirectory(prefix="diffusion-onnx-")
        path = Path(self._tmp.name) / "model.onnx"
        export_onnx(model, path)
        return OnnxModel(path, threads=torch.get_num_threads())

    @property
    def name(self) -> str:
        """What actually runs (a bf16 backend without native bf16 reports float32)."""
        return self.backend

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # freezing is read when a graph compiles (the first call, or a new batch size), so it is set around every call
        # and nowhere else: other compiled modules in the process (training) are left as they are
        with inductor_config.patch(freezing=self.frozen), torch.inference_mode(), \
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self._run(x, t).float()

    # the nn.Module calls the samplers make
    def eval(self) -> "FastModel":
        return self

    def train(self, mode: bool = True) -> "FastModel":
        return self

    def parameters(self):
        return self.network.parameters()
