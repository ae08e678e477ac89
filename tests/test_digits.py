"""The digits datamodule: the fixed stratified split, the batch contract, and checks against its YAML."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genzoo import GenzooError
from genzoo.data import DigitsDataModule

FACTS = dict(shape=[1, 8, 8], levels=17, num_classes=10)


def splits(**kw):
    dm = DigitsDataModule(**{**FACTS, **kw})
    dm.setup()
    return dm, {name: ds for name, ds in dm.splits.items()}


def all_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8), d.target


def test_split_sizes_are_80_10_10_and_partition_the_data():
    _, s = splits()
    assert {k: len(v) for k, v in s.items()} == {"train": 1437, "val": 180, "test": 180}
    images, labels = all_digits()
    everything = sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels))
    used = sorted(img.numpy().tobytes() + bytes([int(lab)]) for ds in s.values()
                  for img, lab in zip(ds.images[:, 0], ds.labels))
    assert used == everything  # every image in exactly one split


def test_split_is_stratified():
    _, s = splits()
    freq = np.bincount(all_digits()[1], minlength=10) / 1797
    for name, ds in s.items():
        counts = np.bincount(ds.labels.numpy(), minlength=10)
        assert np.abs(counts - len(ds) * freq).max() <= 1.5, (name, counts)


def test_split_depends_on_split_seed_only():
    torch.manual_seed(0)
    _, a = splits()
    torch.manual_seed(123)
    np.random.seed(123)
    _, b = splits()
    _, c = splits(split_seed=1)
    assert torch.equal(a["test"].images, b["test"].images)
    assert not torch.equal(a["test"].images, c["test"].images)


def test_batches_are_uint8_images_with_labels():
    dm, _ = splits(batch_size=32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 8, 8)
    assert y.dtype == torch.int64 and y.shape == (32,)
    assert int(x.max()) <= 16 and set(y.tolist()) <= set(range(10))
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 180


@pytest.mark.parametrize("key,value", [("levels", 5), ("shape", [1, 28, 28]), ("num_classes", 0)])
def test_yaml_that_disagrees_with_the_data_is_refused(key, value):
    with pytest.raises(GenzooError, match=key):
        DigitsDataModule(**{**FACTS, key: value})
