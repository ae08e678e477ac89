"""A training order that a resumed run can replay: shuffling fixed by (seed, epoch), and a loader Lightning can save.

A plain ``shuffle=True`` loader draws its permutation from the global generator when the epoch's iterator is made,
so a run restarted mid-epoch sees another order and repeats or skips images. Here epoch ``e`` always uses the
permutation of ``(seed, e)``; after a mid-epoch restart the sampler skips the batches already trained. Lightning
saves and restores the loader's state because it has ``state_dict``/``load_state_dict``, and it leaves the sampler
in place under DDP because it is a ``DistributedSampler``: each rank takes every ``world_size``-th index of the
same permutation (padded by wrapping around, as torch's ``DistributedSampler`` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    def __init__(self, n: int, seed: int, epoch: Callable[[], int] | None = None, num_replicas: int = 1,
                 rank: int = 0):
        # DistributedSampler's own __init__ wants a process group or a dataset; we need neither.
        self.n, self.seed, self.num_replicas, self.rank = int(n), int(seed), int(num_replicas), int(rank)
        self.epoch, self._epoch_fn = 0, epoch
        self.num_samples = math.ceil(self.n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle, self.drop_last = True, False
        self._skip: tuple[int, int] | None = None  # (epoch, samples of this rank to skip) after a restart

    def current_epoch(self) -> int:
        # Lightning sets the epoch only after it has made (and prefetched from) the first iterator of a resumed
        # run, so ask the trainer when we can.
        return self._epoch_fn() if self._epoch_fn is not None else self.epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=g)
        if self.total_size > self.n:  # every rank gets as many indices
            order = torch.cat([order, order[: self.total_size - self.n]])
        return order[self.rank: self.total_size: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch = self.current_epoch()
        order = self.permutation(epoch)
        if self._skip is not None:
            skip_epoch, skip = self._skip
            self._skip = None
            if skip_epoch == epoch and skip < len(order):
                order = order[skip:]
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples

    def skip(self, epoch: int, samples: int) -> None:
        """The next iterator over ``epoch`` starts after its first ``samples`` indices."""
        self._skip = (int(epoch), int(samples))


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` whose position Lightning stores in each checkpoint.

    ``position`` is (epoch, batches trained in it), kept up to date by ``genzoo.resume.LoaderPosition`` after each
    training batch, so it is where the run stands whenever a checkpoint is written (checkpoints are written after
    the other callbacks' hooks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(self.sampler).__name__}")
        self.position = (0, 0)

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position
        return {"epoch": int(epoch), "batches": int(batches), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = (int(state["epoch"]), int(state["batches"]))
        self.sampler.skip(state["epoch"], state["batches"] * state["batch_size"])
