"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017): 28×28 grey images, 256 levels, ten classes.

Read by torchvision from its layout, ``{data_dir}/MNIST/raw/train-images-idx3-ubyte`` (and the labels, and the
``t10k-`` test files; ``FashionMNIST/raw/…`` alike). Test = the official 10,000 test images; val = a hold-out of
the 60,000 training images fixed by ``split_seed`` (10,000 by default, so train/val/test are 50k/10k/10k as in
the binarized MNIST of Larochelle & Murray).

torchvision publishes md5 sums only of the ``.gz`` archives, not of the unpacked idx files it reads, so
``verify_checksums`` here checks each idx file's header against its length (a truncated or foreign file fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import MNIST, FashionMNIST

from genzoo.data.disk import DiskDataModule, Downloads
from genzoo.errors import GenzooError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def check_idx(path: Path, title: str) -> None:
    """An idx file is a 4-byte magic (0, 0, type, ndim), ndim big-endian sizes, then the values (uint8 here)."""
    head = Path(path).read_bytes()[:16]
    size = Path(path).stat().st_size
    ok = len(head) >= 8 and head[0] == head[1] == 0 and head[2] == 0x08 and head[3] in (1, 3)
    if ok:
        ndim = head[3]
        dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        ok = len(head) >= 4 + 4 * ndim and size == 4 + 4 * ndim + int(np.prod(dims))
    if not ok:
        raise GenzooError(f"The {title} file {path} is truncated or not an idx file of uint8 values: delete it and "
                          "set data.download=true, or copy it again.")


class _CheckedIdx(Downloads):
    """Mixin for torchvision's MNIST readers: its own folder name, and an idx header check when verifying."""

    FOLDER = ""
    TITLE = ""

    def __init__(self, root, train: bool = True, download: bool = False, verify_checksums: bool = True):
        self.verify_checksums = verify_checksums
        if verify_checksums:  # before torchvision reads them; a fresh download is checked by its .gz md5 instead
            prefix = "train" if train else "t10k"
            for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
                path = Path(root) / self.FOLDER / "raw" / name
                if path.is_file():
                    check_idx(path, self.TITLE)
        super().__init__(root, train=train, download=download)

    @property
    def raw_folder(self) -> str:
        # torchvision names the folder after the class; a subclass must keep the original name
        return os.path.join(self.root, self.FOLDER, "raw")

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, self.FOLDER, "processed")


class MNISTFiles(_CheckedIdx, MNIST):
    FOLDER, TITLE = "MNIST", "MNIST"


class FashionMNISTFiles(_CheckedIdx, FashionMNIST):
    FOLDER, TITLE = "FashionMNIST", "Fashion-MNIST"


class MNISTDataModule(DiskDataModule):
    NAME, TITLE, FOLDER = "mnist", "MNIST", "MNIST"
    SHAPE, LEVELS, NUM_CLASSES = (1, 28, 28), 256, 10
    READER = MNISTFiles

    def source_files(self):
        return [(self.folder / "raw" / name, None) for name in IDX_FILES]

    def fetch(self) -> None:
        self.title_read(self.source_files(), lambda: self.READER(
            self.data_dir, download=True, verify_checksums=self.verify_checksums))

    def decode(self, out):
        return {"train": self.read_grey(train=True), "test": self.read_grey(train=False)}

    def read_grey(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        ds = self.title_read(self.source_files(), lambda: self.READER(
            self.data_dir, train=train, verify_checksums=self.verify_checksums))
        return ds.data.numpy()[:, None], ds.targets.numpy()  # (N, 1, 28, 28) uint8, (N,) int64


class FashionMNISTDataModule(MNISTDataModule):
    NAME, TITLE, FOLDER = "fashion_mnist", "Fashion-MNIST", "FashionMNIST"
    READER = FashionMNISTFiles
