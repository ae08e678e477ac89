"""The offline 8-bit colour data: sizes as its YAML states them, held-out crops that share no pixel with training
crops, real 8-bit values, and a split that is the same every time."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genzoo import GenzooError
from genzoo.data import PatchesDataModule
from genzoo.data.patches import REGIONS, SIZE


@pytest.fixture(scope="module")
def patches():
    cfg = OmegaConf.load(files("genzoo.conf") / "data" / "patches.yaml")
    cfg.seed = 0
    dm = instantiate(cfg)
    dm.setup()
    return dm


def test_the_splits_have_the_sizes_shape_levels_and_labels_the_yaml_states(patches):
    sizes = {name: len(split) for name, split in patches.splits.items()}
    assert sizes == {"train": 1350, "val": 78, "test": 78}
    assert "1350/78/78" in (files("genzoo.conf") / "data" / "patches.yaml").read_text()
    for split in patches.splits.values():
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (3, 32, 32)
        assert (split.labels == -1).all()
    x, y = next(iter(patches.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)


def test_held_out_crops_share_no_pixel_with_training_crops(patches):
    # Locate every crop in its photograph and check the columns it covers against the regions.
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    for name, split in patches.splits.items():
        start, end = REGIONS[name]
        for crop in split.images[:: max(1, len(split) // 40)].numpy():  # a spread of each split
            hwc = crop.transpose(1, 2, 0)
            found = [
                (p, r, c) for p, photo in enumerate(photos) for r in range(0, photo.shape[0] - SIZE + 1, 16)
                for c in range(0, photo.shape[1] - SIZE + 1, 16) if np.array_equal(photo[r : r + SIZE, c : c + SIZE], hwc)
            ]
            assert found, f"a {name} crop is not on the crop grid of either photograph"
            assert all(start <= c and c + SIZE <= end for _, _, c in found), (name, found)
    # and no held-out crop equals a training crop
    train = {bytes(x) for x in patches.splits["train"].images.flatten(1).numpy()}
    for name in ("val", "test"):
        assert not train & {bytes(x) for x in patches.splits[name].images.flatten(1).numpy()}
    assert REGIONS["train"][1] <= REGIONS["val"][0] and REGIONS["val"][1] <= REGIONS["test"][0]


def test_values_are_real_8_bit_levels_and_the_split_is_the_same_every_time(patches):
    train = patches.splits["train"].images
    assert int(train.max()) > 200 and len(torch.unique(train)) > 200  # the digits have 17
    again = PatchesDataModule(shape=[3, 32, 32], levels=256)
    again.setup()
    for name, split in patches.splits.items():
        assert torch.equal(split.images, again.splits[name].images)


def test_a_stride_outside_the_crop_is_refused_and_stride_32_tiles_the_region():
    with pytest.raises(GenzooError, match=r"data.stride=0 is not a crop grid .* use a stride from 1"):
        PatchesDataModule(shape=[3, 32, 32], levels=256, stride=0)
    tiled = PatchesDataModule(shape=[3, 32, 32], levels=256, stride=32)
    tiled.setup()
    assert len(tiled.splits["train"]) == 364
