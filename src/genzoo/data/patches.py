"""Patches: 32×32 colour crops of the two photographs that ship inside scikit-learn, genzoo's offline 8-bit data.

``sklearn.datasets.load_sample_images()`` holds china.jpg and flower.jpg, 427×640 RGB each (Creative Commons BY
2.0 photographs from Flickr, as scikit-learn's description of them says). Each photograph is cut by column into
three regions, and every crop lies inside one region, so no validation or test crop shares a single pixel with a
training crop:

    columns [0, 448)    train: crops on a grid of stride ``stride`` (default 16), 25 × 27 = 675 per photograph
    columns [448, 544)  val:   non-overlapping crops, 13 × 3 = 39 per photograph
    columns [544, 640)  test:  non-overlapping crops, 13 × 3 = 39 per photograph

so 1350 / 78 / 78 images with the default stride (stride 32: 13 × 14 = 182 per photograph, 364 in all). The split
is fixed by the regions and needs no seed. Values are the JPEGs' 8-bit levels (256), no labels (y = -1).

It is small, and its crops overlap within the training region, but it is real natural-image data with 256 levels
per channel, where the digits have 17 grey ones: what a discretized logistic mixture is for.
"""

from __future__ import annotations

import numpy as np
import torch

from genzoo.data.base import ImageDataModule
from genzoo.errors import GenzooError

SIZE = 32
REGIONS = {"train": (0, 448), "val": (448, 544), "test": (544, 640)}  # columns of each 427×640 photograph


def crops(image: np.ndarray, columns: tuple[int, int], stride: int) -> np.ndarray:
    """(N, 3, 32, 32) uint8 crops of an (H, W, 3) image on a grid of ``stride``, inside ``columns`` [start, end)."""
    start, end = columns
    rows = range(0, image.shape[0] - SIZE + 1, stride)
    cols = range(start, end - SIZE + 1, stride)
    return np.stack([image[r : r + SIZE, c : c + SIZE].transpose(2, 0, 1) for r in rows for c in cols])


class PatchesDataModule(ImageDataModule):
    NAME = "patches"
    SHAPE = (3, SIZE, SIZE)
    LEVELS = 256
    NUM_CLASSES = 0

    def __init__(self, *args, stride: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        self.stride = int(stride)
        if not 1 <= self.stride <= SIZE:
            raise GenzooError(f"data.stride={stride} is not a crop grid for 32×32 crops: use a stride from 1 "
                              "(every position) to 32 (crops side by side); the default is 16.")

    def load_splits(self):
        from sklearn.datasets import load_sample_images

        photographs = load_sample_images().images  # china.jpg, flower.jpg: (427, 640, 3) uint8
        splits = {}
        for name, columns in REGIONS.items():
            stride = self.stride if name == "train" else SIZE  # held-out crops never overlap each other
            images = np.concatenate([crops(photo, columns, stride) for photo in photographs])
            splits[name] = (torch.from_numpy(images), torch.full((len(images),), -1, dtype=torch.int64))
        return splits
