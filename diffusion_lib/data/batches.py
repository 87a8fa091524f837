"""Shuffled mini-batches from a dataset held as one tensor, resumable to the exact batch."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TensorBatches"]


class TensorBatches:
    """Shuffled mini-batches from a dataset held as one tensor (on the training device).

    Each epoch is a fresh permutation from a seeded generator; an incomplete last
    batch is dropped. :meth:`state_dict` captures the position exactly, so a resumed
    run draws the same batches as an uninterrupted one.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 labels: torch.Tensor | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size > images.shape[0]:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({images.shape[0]} images)")
        if labels is not None and labels.shape != images.shape[:1]:
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images.to(device)
        self.labels = None if labels is None else labels.to(device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = -1
        self._new_epoch()  # epoch 0

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.pos = 0
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(len(self.images), generator=self.generator)

    def _take(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self._perm):
            self._new_epoch()
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx.to(self.images.device)

    def next(self) -> torch.Tensor:
        return self.images[self._take()]

    def next_labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch and its labels (the batches and positions :meth:`next` would give)."""
        if self.labels is None:
            raise ValueError("these batches were made without labels")
        idx = self._take()
        return self.images[idx], self.labels[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "epoch_state": self._epoch_state.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["epoch_state"])
        self._epoch_state = state["epoch_state"].clone()
        self._perm = torch.randperm(len(self.images), generator=self.generator)
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
