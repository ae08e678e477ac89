"""What every genzoo datamodule shares: discrete images held as one uint8 tensor per split, batched by indexing.

A batch is ``(x, y)``: ``x`` a uint8 tensor ``(B, C, H, W)`` with values in ``0 … levels-1``, ``y`` int64 labels
(-1 where there are none). Models convert on the device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from genzoo.errors import GenzooError
from genzoo.resume.sampler import ResumableLoader, ResumableSampler


class ArrayDataset(Dataset):
    """Images and labels already in memory; a whole batch is fetched with one indexing operation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert images.dtype == torch.uint8 and images.ndim == 4, images.shape
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]):
        # The DataLoader hands us a batch's indices at once: gather the rows instead of stacking B samples.
        # index_select is an order of magnitude faster than images[idx] on uint8 (N, C, H, W) batches.
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)


def _keep_batch(batch):
    """Collate for ``ArrayDataset``: ``__getitems__`` already returned the stacked batch."""
    return batch


class ImageDataModule(pl.LightningDataModule, ABC):
    """Base for datamodules of discrete images.

    Subclasses set the facts of their data (``SHAPE``, ``LEVELS``, ``NUM_CLASSES``, ``NAME``; None where options
    decide them, as for an image folder, which checks those itself) and implement
    ``load_splits()`` returning ``{"train"|"val"|"test": (images uint8 (N, C, H, W), labels int64 (N,))}``.
    The YAML states the same facts so model configs can interpolate them; the constructor checks they agree.
    """

    NAME: str = ""
    SHAPE: tuple[int, int, int] | None = None
    LEVELS: int | None = None
    NUM_CLASSES: int | None = None

    def __init__(
        self,
        shape: Sequence[int],
        levels: int,
        num_classes: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.levels = int(levels)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.split_seed = int(split_seed)
        self.seed = int(seed)  # the run's seed (the YAML's ${seed}): the training order of each epoch
        self._check_facts()
        self.splits: dict[str, ArrayDataset] = {}

    def _check_facts(self) -> None:
        facts = {"shape": self.SHAPE, "levels": self.LEVELS, "num_classes": self.NUM_CLASSES}
        given = {"shape": self.shape, "levels": self.levels, "num_classes": self.num_classes}
        for key, true in facts.items():
            if true is not None and tuple(_as_tuple(true)) != tuple(_as_tuple(given[key])):
                raise GenzooError(
                    f"data.{key}={_fmt(given[key])} does not match the {self.NAME} data, whose {key} is "
                    f"{_fmt(true)}: remove the override of data.{key} (the data's YAML states the right value)."
                )

    @abstractmethod
    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Images (uint8 ``(N, C, H, W)``) and labels (int64 ``(N,)``) of the train, val and test splits."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for name, (images, labels) in self.load_splits().items():
            dataset = self.make_dataset(name, images, labels)
            images = dataset.images
            if tuple(images.shape[1:]) != self.shape:
                raise GenzooError(
                    f"The {self.NAME} {name} split has images of shape {tuple(images.shape[1:])}, not "
                    f"data.shape={list(self.shape)}: set data.shape to match the files."
                )
            if len(images) and int(images.max()) >= self.levels:
                raise GenzooError(
                    f"The {self.NAME} {name} split has values up to {int(images.max())}, more than "
                    f"data.levels={self.levels} allows: set data.levels to {int(images.max()) + 1} or more."
                )
            self.splits[name] = dataset

    def make_dataset(self, split: str, images: torch.Tensor, labels: torch.Tensor) -> ArrayDataset:
        """The dataset of one split; binarized MNIST draws a fresh training sample each epoch here."""
        return ArrayDataset(images, labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=False,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch) and saved in checkpoints, so a run resumed mid-epoch replays the same order."""
        self.setup()
        trainer = self.trainer
        sampler = ResumableSampler(
            len(self.splits["train"]),
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else None,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )

        return ResumableLoader(
            self.splits["train"],
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=False,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # the loader's base seed for workers comes from its own generator, not from the global one that
            # dropout uses, so making an iterator on resume does not shift the global stream
            generator=torch.Generator().manual_seed(sampler.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _as_tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _fmt(v):
    return list(v) if isinstance(v, (list, tuple)) else v
