"""The handwritten digits shipped inside scikit-learn: genzoo's offline default.

1797 images of 8×8 pixels with 17 grey levels (0…16), ten classes, from the UCI "Optical Recognition of
Handwritten Digits" set (Alpaydin & Kaynak 1998). The split is stratified 80/10/10 (1437/180/180) and fixed by
``split_seed`` alone, so runs with different seeds are compared on the same test set.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from genzoo.data.base import ImageDataModule
from genzoo.errors import GenzooError


class DigitsDataModule(ImageDataModule):
    NAME = "digits"
    SHAPE = (1, 8, 8)
    LEVELS = 17
    NUM_CLASSES = 10

    def __init__(self, *args, val_size: int = 180, test_size: int = 180, **kwargs):
        super().__init__(*args, **kwargs)
        self.val_size, self.test_size = int(val_size), int(test_size)
        if self.val_size < 10 or self.test_size < 10 or self.val_size + self.test_size > 1797 - 10:
            raise GenzooError(
                f"data.val_size={val_size} and data.test_size={test_size} do not fit the 1797 digits with a "
                "stratified split: choose each between 10 and 800."
            )

    def load_splits(self):
        digits = load_digits()
        images = digits.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0…16
        labels = digits.target.astype(np.int64)
        idx = np.arange(len(labels))
        rest, test = train_test_split(
            idx, test_size=self.test_size, stratify=labels, random_state=self.split_seed
        )
        train, val = train_test_split(
            rest, test_size=self.val_size, stratify=labels[rest], random_state=self.split_seed
        )
        return {
            name: (torch.from_numpy(images[np.sort(part)]), torch.from_numpy(labels[np.sort(part)]))
            for name, part in (("train", train), ("val", val), ("test", test))
        }
