"""Every on-disk data set, read from tiny generated files in its real format through torchvision's readers.

Checks what a run relies on: shapes, dtype, the levels range, labels as written, train/val/test disjoint and fixed
by ``split_seed``, the three binarisations of MNIST, the decode cache, and one sentence naming the file and the fix
for missing, damaged or disagreeing data.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from genzoo.data import fake_files as fake
from genzoo import GenzooError
from genzoo.data import (BinarizedMNISTDataModule, CelebADataModule, CIFAR10DataModule, FashionMNISTDataModule,
                         FolderDataModule, MNISTDataModule, SVHNDataModule)
from genzoo.data.binarized import bernoulli

GREY, RGB = dict(shape=[1, 28, 28], levels=256, num_classes=10), dict(shape=[3, 32, 32], levels=256, num_classes=10)
# name: (datamodule, its YAML facts and options, writer, (train, val, test) sizes for the files written)
CASES = {
    "mnist": (MNISTDataModule, {**GREY, "val_size": 3}, fake.write_mnist, (9, 3, 6)),
    "fashion_mnist": (FashionMNISTDataModule, {**GREY, "val_size": 3},
                      lambda d: fake.write_mnist(d, folder="FashionMNIST"), (9, 3, 6)),
    "binarized_fixed": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "val_size": 3, "binarization": "fixed"},
                        fake.write_mnist, (9, 3, 6)),
    "binarized_dynamic": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "val_size": 3, "binarization": "dynamic"},
                          fake.write_mnist, (9, 3, 6)),
    "binarized_larochelle": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "num_classes": 0,
                                                        "binarization": "larochelle"}, fake.write_amat, (8, 3, 3)),
    "cifar10": (CIFAR10DataModule, {**RGB, "val_size": 4}, fake.write_cifar10, (11, 4, 3)),
    "svhn": (SVHNDataModule, {**RGB, "val_size": 2}, fake.write_svhn, (8, 2, 4)),
    "svhn_extra": (SVHNDataModule, {**RGB, "val_size": 2, "extra": True}, fake.write_svhn, (13, 2, 4)),
    "celeba": (CelebADataModule, dict(shape=[3, 64, 64], levels=256, num_classes=0), fake.write_celeba, (4, 2, 2)),
    "folder_rgb": (FolderDataModule, dict(shape=[3, 16, 16], levels=256, num_classes=0, image_size=16, channels=3,
                                          val_fraction=0.1, test_fraction=0.2), None, (7, 1, 2)),
    "folder_grey_classes": (FolderDataModule, dict(shape=[1, 12, 12], levels=256, num_classes=2, image_size=12,
                                                   channels=1, val_fraction=0.1, test_fraction=0.2), None, (7, 1, 2)),
}


def make(name, tmp_path, write=True, **overrides):
    cls, options, writer, _ = CASES[name]
    data = tmp_path / "data"
    if write and name.startswith("folder"):
        fake.write_folder(data, n=10, classes=("cats", "dogs") if "classes" in name else (),
                          mode="L" if "grey" in name else "RGB")
    elif write:
        writer(data)
    if name.startswith("folder"):
        options = {**options, "root": str(data)}
    dm = cls(**{**options, "data_dir": str(data), "cache_dir": str(tmp_path / "cache"), "verify_checksums": False,
                "batch_size": 4, **overrides})
    dm.prepare_data()
    dm.setup()
    return dm


def rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return {name: make(name, tmp_path_factory.mktemp(name)) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_splits_have_the_stated_shape_dtype_levels_sizes_and_labels(loaded, name):
    dm, (_, options, _, sizes) = loaded[name], CASES[name]
    assert tuple(len(dm.splits[s]) for s in ("train", "val", "test")) == sizes
    for split in dm.splits.values():
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == tuple(options["shape"])
        assert int(split.images.max()) <= options["levels"] - 1
        assert split.labels.dtype == torch.int64
        allowed = set(range(options["num_classes"])) if options["num_classes"] else {-1}
        assert set(split.labels.tolist()) <= allowed
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (4, *options["shape"]) and y.shape == (4,)


@pytest.mark.parametrize("name", list(CASES))
def test_train_val_test_are_disjoint(loaded, name):
    s = {k: rows(v.images) for k, v in loaded[name].splits.items()}
    assert not (s["train"] & s["val"]) and not (s["train"] & s["test"]) and not (s["val"] & s["test"])


def test_mnist_test_split_is_the_official_one_and_val_comes_out_of_train(tmp_path):
    truth = fake.write_mnist(tmp_path / "data")
    dm = make("mnist", tmp_path, write=False)
    test_images, test_labels = truth["t10k"]
    assert torch.equal(dm.splits["test"].images[:, 0], torch.from_numpy(test_images))
    assert dm.splits["test"].labels.tolist() == test_labels.tolist()
    train_images, _ = truth["train"]
    held = rows(dm.splits["train"].images) | rows(dm.splits["val"].images)
    assert held == rows(torch.from_numpy(train_images)[:, None])


def test_cifar_and_svhn_keep_channels_first_and_svhn_maps_label_ten_to_zero(tmp_path):
    truth = fake.write_cifar10(tmp_path / "data")
    dm = make("cifar10", tmp_path, write=False)
    assert torch.equal(dm.splits["test"].images, torch.from_numpy(truth["test_batch"][0]))
    svhn_truth = fake.write_svhn(tmp_path / "data")
    dm = make("svhn", tmp_path, write=False)
    assert torch.equal(dm.splits["test"].images, torch.from_numpy(svhn_truth["test"][0]))
    assert dm.splits["test"].labels.tolist() == svhn_truth["test"][1].tolist()


@pytest.mark.parametrize("name", ["mnist", "cifar10", "folder_rgb"])
def test_hold_out_depends_on_split_seed_only(tmp_path, name):
    torch.manual_seed(1)
    a = make(name, tmp_path / "a", split_seed=0)
    torch.manual_seed(2)
    np.random.seed(2)
    b = make(name, tmp_path / "a", split_seed=0)
    c = make(name, tmp_path / "a", split_seed=1)
    assert torch.equal(a.splits["val"].images, b.splits["val"].images)
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert rows(a.splits["val"].images) != rows(c.splits["val"].images)


def test_celeba_keeps_the_centre_108_square_resized_to_64(tmp_path):
    from PIL import Image

    fake.write_celeba(tmp_path / "data", partition=(2, 2, 2))  # torchvision fails on a one-image split
    centre = np.zeros((218, 178, 3), dtype=np.uint8)  # white inside the centred 108 square, black around it
    top, left = (218 - 108) // 2, (178 - 108) // 2
    centre[top:top + 108, left:left + 108] = 255
    Image.fromarray(centre).save(tmp_path / "data/celeba/img_align_celeba/000001.jpg", quality=100)
    image = make("celeba", tmp_path, write=False).splits["train"].images[0].float()
    assert image.shape == (3, 64, 64)
    assert image[:, 1:-1, 1:-1].min() > 235  # nothing of the black border inside
    assert image.mean() > 245


# ---- binarized MNIST ---------------------------------------------------------------------------------------------
def train_sample(dm, epoch):
    dm.epoch = epoch
    return dm.splits["train"].images.clone()


def test_dynamic_binarization_is_fresh_each_epoch_and_fixed_by_seed_and_epoch(tmp_path):
    fake.write_mnist(tmp_path / "data")
    a, b = make("binarized_dynamic", tmp_path, write=False), make("binarized_dynamic", tmp_path, write=False)
    other_seed = make("binarized_dynamic", tmp_path, write=False, seed=1)
    e0, e1 = train_sample(a, 0), train_sample(a, 1)
    assert set(e0.unique().tolist()) <= {0, 1} and not torch.equal(e0, e1)
    assert torch.equal(train_sample(b, 1), e1) and torch.equal(train_sample(a, 0), e0)
    assert not torch.equal(train_sample(other_seed, 1), e1)
    x, _ = next(iter(a.train_dataloader()))
    assert set(x.unique().tolist()) <= {0, 1}
    # val/test are one fixed sample, the same as the fixed binarisation's
    fixed = make("binarized_fixed", tmp_path, write=False)
    for split in ("val", "test"):
        assert torch.equal(a.splits[split].images, fixed.splits[split].images)


def test_dynamic_binarization_draws_each_pixel_with_probability_level_over_255(tmp_path):
    grey = torch.tensor([0, 51, 128, 204, 255], dtype=torch.uint8).repeat_interleave(4000).view(-1, 1, 1, 1)
    from genzoo.data.binarized import DynamicBinarizedDataset

    ds = DynamicBinarizedDataset(grey, torch.zeros(len(grey), dtype=torch.int64), seed=0, epoch=lambda: 0)
    means = ds.images.view(5, -1).float().mean(1)
    assert means.tolist() == pytest.approx([0, 0.2, 128 / 255, 0.8, 1], abs=0.025)
    levels = np.repeat(np.array([51, 204], dtype=np.uint8), 4000)
    assert bernoulli(levels, np.random.default_rng(0)).reshape(2, -1).mean(1) == pytest.approx([0.2, 0.8], abs=0.025)


@pytest.mark.parametrize("name", ["binarized_fixed", "binarized_larochelle"])
def test_fixed_and_larochelle_never_change(tmp_path, name):
    truth = fake.write_amat(tmp_path / "data") if "larochelle" in name else fake.write_mnist(tmp_path / "data")
    a = make(name, tmp_path, write=False)
    first = train_sample(a, 0)
    assert torch.equal(train_sample(a, 5), first)
    assert torch.equal(train_sample(make(name, tmp_path, write=False, seed=7), 3), first)
    assert set(first.unique().tolist()) <= {0, 1}
    if "larochelle" in name:
        assert torch.equal(first, torch.from_numpy(truth["train"]))
        assert torch.equal(a.splits["val"].images, torch.from_numpy(truth["valid"]))


# ---- the cache ---------------------------------------------------------------------------------------------------
def test_cache_is_reused_and_a_changed_source_file_is_noticed(tmp_path):
    fake.write_mnist(tmp_path / "data", seed=0)
    first = make("mnist", tmp_path, write=False).splits["test"].images.clone()
    assert len(list((tmp_path / "cache/data").glob("mnist-*"))) == 1
    assert torch.equal(make("mnist", tmp_path, write=False).splits["test"].images, first)
    assert len(list((tmp_path / "cache/data").glob("mnist-*"))) == 1
    fake.write_mnist(tmp_path / "data", seed=1)  # same sizes, new pixels
    path = tmp_path / "data/MNIST/raw/t10k-images-idx3-ubyte"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = make("mnist", tmp_path, write=False).splits["test"].images
    assert not torch.equal(second, first)
    assert len(list((tmp_path / "cache/data").glob("mnist-*"))) == 2


def test_large_arrays_are_memory_mapped_copy_on_write(tmp_path, monkeypatch):
    import genzoo.data.cache as cache

    monkeypatch.setattr(cache, "MMAP_BYTES", 0)  # every array counts as large
    dm = make("cifar10", tmp_path)
    arrays = dm.arrays()
    assert all(isinstance(a, np.memmap) for a in arrays.values())
    (entry,) = (tmp_path / "cache/data").glob("cifar10-*")
    on_disk = np.load(entry / "test_images.npy").copy()
    dm.splits["test"].images[0] += 1  # the process's own copy of the page changes, the shared file does not
    assert np.array_equal(np.load(entry / "test_images.npy"), on_disk)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)


# ---- mistakes: one sentence naming the file (or folder) and the fix ----------------------------------------------
@pytest.mark.parametrize("name,expected", [("mnist", "MNIST/raw/train-images-idx3-ubyte"),
                                           ("cifar10", "cifar-10-batches-py/data_batch_1"),
                                           ("svhn", "svhn/train_32x32.mat"),
                                           ("celeba", "celeba/list_attr_celeba.txt"),
                                           ("binarized_larochelle", "binarized_mnist/binarized_mnist_train.amat")])
def test_missing_files_stop_at_construction_naming_file_folder_and_both_ways_out(tmp_path, name, expected):
    with pytest.raises(GenzooError) as e:
        make(name, tmp_path, write=False)
    message = str(e.value)
    assert expected in message and "data.download=true" in message and "put the" in message
    assert str(tmp_path / "data") in message and message.endswith(".") and "\n" not in message


def test_corrupt_cifar_batch_is_named_when_checksums_are_verified(tmp_path):
    fake.write_cifar10(tmp_path / "data")
    with pytest.raises(GenzooError, match=r"cifar-10-batches-py/data_batch_1 is corrupt.*md5.*download=true"):
        make("cifar10", tmp_path, write=False, verify_checksums=True)


def test_truncated_files_are_named(tmp_path):
    fake.write_mnist(tmp_path / "data")
    path = tmp_path / "data/MNIST/raw/t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GenzooError, match="t10k-images-idx3-ubyte is truncated"):
        make("mnist", tmp_path, write=False, verify_checksums=True)
    fake.write_amat(tmp_path / "data")
    path = tmp_path / "data/binarized_mnist/binarized_mnist_valid.amat"
    path.write_text(path.read_text()[:-500])
    with pytest.raises(GenzooError, match="Line 3 of .*binarized_mnist_valid.amat"):
        make("binarized_larochelle", tmp_path, write=False)


def test_unreadable_image_and_empty_folder_are_named(tmp_path):
    fake.write_folder(tmp_path / "data", n=4)
    (tmp_path / "data/broken.png").write_bytes(b"not a png")
    with pytest.raises(GenzooError, match=r"The image .*broken.png cannot be read.*delete it or replace it"):
        make("folder_rgb", tmp_path, write=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenzooError, match=r"holds no images.*set data.root"):
        make("folder_rgb", tmp_path, write=False, root=str(tmp_path / "empty"))


@pytest.mark.parametrize("name,override,fragment", [
    ("mnist", {"levels": 2}, "data.levels=2"),
    ("cifar10", {"shape": [1, 32, 32]}, "data.shape=[1, 32, 32]"),
    ("folder_rgb", {"shape": [1, 16, 16]}, "data.shape=[1, 16, 16]"),
    ("folder_grey_classes", {"num_classes": 0}, "set data.num_classes=2"),
    ("binarized_larochelle", {"num_classes": 10}, "set data.num_classes=0"),
])
def test_yaml_that_disagrees_with_the_files_is_refused(tmp_path, name, override, fragment):
    with pytest.raises(GenzooError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        make(name, tmp_path, **override)


def test_folder_levels_disagreeing_with_the_pixels_is_refused(tmp_path):
    with pytest.raises(GenzooError, match="data.levels"):
        make("folder_rgb", tmp_path, levels=16)


def test_download_true_fetches_in_prepare_data_then_decodes(tmp_path, monkeypatch):
    """No network in tests: torchvision's MNIST.download is replaced by a writer of the same files."""
    from genzoo.data.mnist import MNISTFiles

    calls = []

    def download(self):
        calls.append(self.raw_folder)
        fake.write_mnist(tmp_path / "data")

    monkeypatch.setattr(MNISTFiles, "download", download)
    dm = MNISTDataModule(**CASES["mnist"][1], data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                         download=True, verify_checksums=False)
    assert not calls and not dm.splits  # nothing read or fetched before Lightning's prepare_data
    dm.prepare_data()
    dm.setup()
    assert calls == [str(tmp_path / "data" / "MNIST" / "raw")]
    assert len(dm.splits["test"]) == 6


@pytest.fixture
def no_network(monkeypatch):
    """Every connection fails as it does offline, before a byte leaves the machine: name lookups raise
    socket.gaierror (urllib turns it into URLError) and connecting raises OSError. CelebA's Google Drive
    download gets the same URLError from the function torchvision calls for it."""
    import socket
    import urllib.error

    import torchvision.datasets.celeba

    def lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")

    def connect(*args, **kwargs):
        raise OSError("no network in this test")

    def google_drive(*args, **kwargs):
        raise urllib.error.URLError(OSError("no network in this test"))

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(torchvision.datasets.celeba, "download_file_from_google_drive", google_drive)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"),
                                         ("binarized_fixed", "MNIST"), ("binarized_larochelle", "binarized_mnist"),
                                         ("cifar10", "cifar-10-batches-py"), ("svhn", "svhn"), ("celeba", "celeba")])
def test_a_failed_download_says_it_failed_and_why_not_that_a_file_is_missing(tmp_path, no_network, name, folder):
    with pytest.raises(GenzooError) as e:
        make(name, tmp_path, write=False, download=True)
    message = str(e.value)
    assert message.startswith(f"Downloading the {CASES[name][0].TITLE} files into {tmp_path / 'data' / folder} failed")
    assert "no network in this test" in message and "Error" in message  # the reason: the exception's class and text
    assert "check the network" in message and "by hand into" in message
    assert "is missing" not in message and "set data.download=true" not in message
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "binarized_mnist", "cifar10", "svhn", "celeba"])
def test_each_yaml_states_its_data_facts_and_verifies_checksums_by_default(name):
    from importlib.resources import files

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(files("genzoo.conf") / "data" / f"{name}.yaml")
    cls = get_class(cfg._target_)
    assert tuple(cfg.shape) == cls.SHAPE and cfg.levels == cls.LEVELS
    assert cls.NUM_CLASSES is None or cfg.num_classes == cls.NUM_CLASSES
    assert cfg.verify_checksums is True and cfg.download is False
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["data_dir"] == "${paths.data_dir}" and raw["cache_dir"] == "${paths.cache_dir}"
