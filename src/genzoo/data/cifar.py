"""CIFAR-10 (Krizhevsky 2009): 32×32 RGB images, 256 levels, ten classes.

Read by torchvision from ``{data_dir}/cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``
and ``batches.meta``, the pickled batches of the "python version"). Test = the official 10,000 test images; val =
5,000 images held out of the 50,000 training images by ``split_seed``.
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import CIFAR10

from genzoo.data.disk import DiskDataModule, Downloads


class CIFAR10Files(Downloads, CIFAR10):
    """torchvision's CIFAR-10 reader; with ``verify_checksums=False`` its md5 checks (batches and meta) only ask
    that the files exist, so generated files load through the same code."""

    def __init__(self, root, train: bool = True, download: bool = False, verify_checksums: bool = True):
        if not verify_checksums:  # instance attributes shadow the class's lists of published sums
            self.train_list = [[name, None] for name, _ in CIFAR10.train_list]
            self.test_list = [[name, None] for name, _ in CIFAR10.test_list]
            self.meta = {**CIFAR10.meta, "md5": None}
        super().__init__(root, train=train, download=download)


class CIFAR10DataModule(DiskDataModule):
    NAME, TITLE, FOLDER = "cifar10", "CIFAR-10", "cifar-10-batches-py"
    SHAPE, LEVELS, NUM_CLASSES = (3, 32, 32), 256, 10

    def source_files(self):
        lists = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        return [(self.folder / name, md5) for name, md5 in lists]

    def fetch(self) -> None:
        self.title_read(self.source_files(), lambda: CIFAR10Files(
            self.data_dir, download=True, verify_checksums=self.verify_checksums))

    def decode(self, out):
        splits = {}
        for name, train in (("train", True), ("test", False)):
            ds = self.title_read(self.source_files(), lambda: CIFAR10Files(
                self.data_dir, train=train, verify_checksums=self.verify_checksums))
            # torchvision keeps (N, H, W, C); genzoo's images are (N, C, H, W)
            splits[name] = (np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets))
        return splits
