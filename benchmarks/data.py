"""How fast each datamodule's train loader hands out batches, against indexing a ready tensor of the same size.

    python benchmarks/data.py                         # every data set; generated files where the real ones are absent
    python benchmarks/data.py --data-dir ~/data       # real files from there, where present (torchvision's layout)
    python benchmarks/data.py --quick                 # small generated sets, a smoke check (~30 s)

For each data set the datamodule is built as ``genzoo-train data=NAME`` builds it (the YAML's options, batch size
and split), its files decoded into a temporary cache (the time is printed as "decode"; a second build reads the
cache, "cached"). Then one epoch of ``train_dataloader()`` is timed against two loops over a ready uint8 tensor of
the same split, shuffled the same way:

* ``x[idx]``: the loop one writes by hand, ``images[perm[i:i+B]]``. The issue's target (>= 0.95) is against this.
* ``index_select``: the fastest gather torch has. What the loader loses against it is the fixed cost of torch's
  DataLoader and genzoo's resumable sampler per batch (tens of microseconds), which a training step of a few
  milliseconds hides; small images at small batches show it most.

Dynamic binarisation draws a new Bernoulli sample of the whole training split each epoch (39 M pixels of MNIST,
about 0.16 s on one core), which a bare loop over batches shows as a low ratio and a training epoch of minutes
does not; the loops over the ready tensor do not binarize.

Loops alternate (loader, x[idx], index_select, loader, ...) and each number is the median of the repeats, so drift in
the machine's load hits all three alike. "mmap" marks a split memory-mapped from the cache (over 256 MB).
Where no real files are found, files in the real format are generated (random pixels) at the real size, except
CelebA (2,000 JPEGs) and the folder (1,000 PNGs), whose encoding would take minutes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genzoo.data import (BinarizedMNISTDataModule, CelebADataModule, CIFAR10DataModule, FashionMNISTDataModule,
                         FolderDataModule, MNISTDataModule, SVHNDataModule)
from genzoo.data import fake_files as fake
from genzoo.errors import GenzooError

GREY, RGB = dict(shape=[1, 28, 28], levels=256, num_classes=10), dict(shape=[3, 32, 32], levels=256, num_classes=10)
# name: (datamodule, options as in conf/data/NAME.yaml, writer of generated files (full size, quick size))
SETS = {
    "mnist": (MNISTDataModule, {**GREY, "val_size": 10000},
              lambda d, q: fake.write_mnist(d, *((6000, 1000) if q else (60000, 10000)))),
    "fashion_mnist": (FashionMNISTDataModule, {**GREY, "val_size": 10000},
                      lambda d, q: fake.write_mnist(d, *((6000, 1000) if q else (60000, 10000)),
                                                    folder="FashionMNIST")),
    "binarized_mnist fixed": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "binarization": "fixed",
                                                         "val_size": 10000},
                              lambda d, q: fake.write_mnist(d, *((6000, 1000) if q else (60000, 10000)))),
    "binarized_mnist dynamic": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "binarization": "dynamic",
                                                           "val_size": 10000},
                                lambda d, q: fake.write_mnist(d, *((6000, 1000) if q else (60000, 10000)))),
    "binarized_mnist larochelle": (BinarizedMNISTDataModule, {**GREY, "levels": 2, "num_classes": 0,
                                                              "binarization": "larochelle"},
                                   lambda d, q: fake.write_amat(d, {"train": 5000 if q else 50000, "valid": 1000,
                                                                    "test": 1000})),
    "cifar10": (CIFAR10DataModule, {**RGB, "val_size": 5000},
                lambda d, q: fake.write_cifar10(d, per_batch=1000 if q else 10000)),
    "svhn": (SVHNDataModule, {**RGB, "val_size": 5000},
             lambda d, q: fake.write_svhn(d, {"train": 7000 if q else 73257, "test": 1000})),
    "celeba": (CelebADataModule, dict(shape=[3, 64, 64], levels=256, num_classes=0),
               lambda d, q: fake.write_celeba(d, (400, 50, 50) if q else (2000, 100, 100))),
    "folder": (FolderDataModule, dict(shape=[3, 64, 64], levels=256, num_classes=0, image_size=64, channels=3),
               lambda d, q: fake.write_folder(d / "images", n=200 if q else 1000)),
}


def build(name: str, data_dir: Path, scratch: Path, quick: bool):
    cls, options, writer = SETS[name]
    kwargs = dict(options, data_dir=str(data_dir), cache_dir=str(scratch / "cache"), batch_size=64)
    if name == "folder":
        kwargs["root"] = str(data_dir / "images")
    try:
        start = time.perf_counter()
        dm = cls(**kwargs)
        source = "real files"
    except GenzooError:  # no real files there: generate files in the real format
        generated = scratch / "data"
        writer(generated, quick)
        kwargs.update(data_dir=str(generated), verify_checksums=False)
        if quick and "val_size" in kwargs:  # the quick sets hold a tenth of the images
            kwargs["val_size"] = 500
        if name == "folder":
            kwargs["root"] = str(generated / "images")
        start = time.perf_counter()
        dm = cls(**kwargs)
        source = "generated"
    decode = time.perf_counter() - start
    start = time.perf_counter()
    cls(**kwargs)
    return dm, source, decode, time.perf_counter() - start


def loader_epoch(dm) -> float:
    start, n = time.perf_counter(), 0
    for _ in dm.train_dataloader():
        n += 1
    return n / (time.perf_counter() - start)


def tensor_epoch(images: torch.Tensor, labels: torch.Tensor, batch: int, select: bool) -> float:
    start, n = time.perf_counter(), 0
    perm = torch.randperm(len(images))
    for i in range(0, len(perm), batch):
        idx = perm[i:i + batch]
        if select:
            x, y = images.index_select(0, idx), labels.index_select(0, idx)
        else:
            x, y = images[idx], labels[idx]
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(SETS), choices=list(SETS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # gathering bytes gains nothing from a second thread; keep the numbers comparable

    print(f"{'data set':28s} {'source':10s} {'train':>7s} {'decode s':>8s} {'cached s':>8s} {'loader/s':>9s} "
          f"{'x[idx]/s':>9s} {'select/s':>9s} {'vs x[idx]':>9s} {'vs select':>9s}")
    for name in args.only:
        with tempfile.TemporaryDirectory() as scratch:
            dm, source, decode, cached = build(name, args.data_dir.expanduser(), Path(scratch), args.quick)
            train = dm.splits["train"]
            images, labels = train.images.contiguous(), train.labels  # the ready tensor: the same split, in memory
            mmap = isinstance(dm.arrays().get("train_images"), np.memmap)
            rates = {"loader": [], "adv": [], "select": []}
            for _ in range(args.repeats):
                if isinstance(getattr(dm, "epoch", None), int):  # dynamic binarisation: a new sample each epoch
                    dm.epoch += 1
                rates["loader"].append(loader_epoch(dm))
                rates["adv"].append(tensor_epoch(images, labels, dm.batch_size, select=False))
                rates["select"].append(tensor_epoch(images, labels, dm.batch_size, select=True))
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"{name:28s} {source:10s} {len(train):7d} {decode:8.2f} {cached:8.2f} {med['loader']:9.0f} "
                  f"{med['adv']:9.0f} {med['select']:9.0f} {med['loader'] / med['adv']:9.2f} "
                  f"{med['loader'] / med['select']:9.2f}{'  mmap' if mmap else ''}")


if __name__ == "__main__":
    main()
