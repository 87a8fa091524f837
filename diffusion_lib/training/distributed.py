"""Data-parallel training under ``torchrun`` (DistributedDataParallel: NCCL on GPUs, gloo on CPUs).

    torchrun --nproc_per_node=2 -m diffusion_lib.train --config params/cpu/03_train.yaml

Every rank draws the same global batch, the same timesteps and the same noise
(identical seeds and RNG states), and trains on its own contiguous slice of it;
gradients are averaged by DDP. So N ranks with a global batch B follow the same
trajectory as one process with batch B, up to the order of floating-point sums.
Rank 0 alone logs, samples and writes checkpoints; every rank resumes from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Distributed"]


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read torchrun's environment; initialise the process group when there is more than one rank."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        ctx = cls(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(ctx.local_rank)
            dist.init_process_group(backend=backend)
        return ctx

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch."""
        return x.chunk(self.world_size)[self.rank] if self.enabled else x

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / self.world_size

    def _reduce_flag(self, flag: bool, op) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int32,
                         device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=op)
        return bool(t.item())

    def all_true(self, ok: bool) -> bool:
        """True on every rank only if ``ok`` on every rank (so a non-finite loss stops them all together)."""
        return self._reduce_flag(ok, dist.ReduceOp.MIN) if self.enabled else ok

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (a stop signal seen by any rank stops them all)."""
        return self._reduce_flag(flag, dist.ReduceOp.MAX) if self.enabled else flag

    def in_sync(self, model: nn.Module) -> bool:
        """Whether every rank holds bitwise the same weights as rank 0."""
        if not self.enabled:
            return True
        ok = True
        for p in model.state_dict().values():
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            ok &= bool(torch.equal(ref, p.detach()))
        return self._reduce_flag(ok, dist.ReduceOp.MIN)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @staticmethod
    def shutdown() -> None:
        """Tear the process group down, if one was set up (the CLI calls this on every exit)."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
