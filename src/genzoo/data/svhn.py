"""SVHN, the Street View House Numbers (Netzer et al. 2011), cropped digits: 32×32 RGB, 256 levels, ten classes.

Read by torchvision from the format-2 files ``train_32x32.mat``, ``test_32x32.mat`` and, with ``data.extra=true``,
``extra_32x32.mat`` (MATLAB files; scipy reads them), all in ``{data_dir}/svhn/``. torchvision puts them straight in
its ``root``, so genzoo gives them a folder of their own. Test = the official 26,032 test images; train = the
73,257 training images, plus the 531,131 "extra" ones when asked; val = 5,000 held out of train by
``split_seed``. Labels are 0…9 (torchvision maps the files' 10 to 0).
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import SVHN

from genzoo.data.disk import DiskDataModule, Downloads


class SVHNFiles(Downloads, SVHN):
    """torchvision's SVHN reader; with ``verify_checksums=False`` its md5 check only asks that the file exists."""

    def __init__(self, root, split: str = "train", download: bool = False, verify_checksums: bool = True):
        if not verify_checksums:
            self.split_list = {k: [url, name, None] for k, (url, name, _) in SVHN.split_list.items()}
        super().__init__(root, split=split, download=download)


class SVHNDataModule(DiskDataModule):
    NAME, TITLE, FOLDER = "svhn", "SVHN", "svhn"
    SHAPE, LEVELS, NUM_CLASSES = (3, 32, 32), 256, 10

    def __init__(self, *args, extra: bool = False, **kwargs):
        self.extra = bool(extra)
        super().__init__(*args, **kwargs)

    def parts(self) -> list[str]:
        return ["train", "test"] + (["extra"] if self.extra else [])

    def source_files(self):
        return [(self.folder / SVHN.split_list[p][1], SVHN.split_list[p][2]) for p in self.parts()]

    def options(self) -> dict:
        return {"extra": self.extra}

    def fetch(self) -> None:
        for part in self.parts():
            self.title_read(self.source_files(), lambda: SVHNFiles(
                self.folder, split=part, download=True, verify_checksums=self.verify_checksums))

    def read(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        ds = self.title_read(self.source_files(), lambda: SVHNFiles(
            self.folder, split=part, verify_checksums=self.verify_checksums))
        return np.ascontiguousarray(ds.data), ds.labels  # (N, 3, 32, 32) uint8, (N,) int64

    def decode(self, out):
        splits = {part: self.read(part) for part in self.parts()}
        if self.extra:
            extra_images, extra_labels = splits.pop("extra")
            images, labels = splits["train"]
            splits["train"] = (np.concatenate([images, extra_images]), np.concatenate([labels, extra_labels]))
        return splits
