"""Binarized MNIST in the three conventions published likelihoods use (their numbers do not compare across them).

* ``larochelle``: the fixed binarisation of Larochelle & Murray (2011), the files
  ``binarized_mnist_{train,valid,test}.amat`` (50,000/10,000/10,000 lines of 784 space-separated 0/1 values) in
  ``{data_dir}/binarized_mnist/``. PixelRNN (van den Oord et al. 2016), IWAE (Burda et al. 2016) and most VAE papers
  report on these. torchvision has no reader for them, hence the small parser below; no md5 sums are published,
  so the parser checks the line count, the line length and the values instead.
* ``fixed``: one Bernoulli sample of MNIST's grey levels (p = level/255), drawn once with ``split_seed`` and kept
  in the cache, so it never changes; the MNIST splits (val held out of train by ``split_seed``).
* ``dynamic``: a fresh Bernoulli sample of the training images every epoch (Salakhutdinov & Murray 2008), drawn
  from ``(seed, epoch)`` so a run, and a resumed run, sees the same samples; val and test are the fixed sample.
  The sample is drawn in the training process (from the trainer's epoch), so ``num_workers`` must be 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.utils import download_url

from genzoo.data.base import ArrayDataset
from genzoo.data.disk import download_failed
from genzoo.data.mnist import MNISTDataModule
from genzoo.errors import GenzooError

CONVENTIONS = ("dynamic", "fixed", "larochelle")
AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"
AMAT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}


def read_amat(path: Path, expected: int | None = None) -> np.ndarray:
    """Parse a Larochelle ``.amat`` file into uint8 images (N, 1, 28, 28) with values 0/1."""
    lines = Path(path).read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    images = np.empty((len(lines), 784), dtype=np.uint8)
    for i, line in enumerate(lines):
        chars = np.frombuffer(line.strip(), dtype=np.uint8)
        if len(chars) == 2 * 784 - 1 and (chars[1::2] == ord(" ")).all():  # the usual "0 1 0 …": read it in place
            digits = chars[::2] - ord("0")
        else:  # other whitespace between the values
            digits = np.frombuffer(b"".join(line.split()), dtype=np.uint8) - ord("0")
        if len(digits) != 784 or digits.max(initial=0) > 1:
            raise GenzooError(f"Line {i + 1} of {path} does not hold 784 values of 0 or 1, so the file is truncated "
                              "or damaged: delete it and set data.download=true, or copy it again.")
        images[i] = digits
    if expected is not None and len(images) != expected:
        raise GenzooError(f"{path} holds {len(images)} images, not the {expected} of Larochelle & Murray's split, so "
                          "the file is truncated: delete it and set data.download=true, or copy it again "
                          "(data.verify_checksums=false accepts other sizes).")
    return images.reshape(-1, 1, 28, 28)


def bernoulli(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1 with P(1) = level/255: a uniform integer in 0…254 is below the level that often."""
    return (rng.integers(0, 255, size=grey.shape, dtype=np.uint8) < grey).astype(np.uint8)


class DynamicBinarizedDataset(ArrayDataset):
    """Grey training images whose ``images`` are a fresh Bernoulli sample for each epoch, fixed by (seed, epoch)."""

    def __init__(self, grey: torch.Tensor, labels: torch.Tensor, seed: int, epoch):
        assert grey.dtype == torch.uint8 and grey.ndim == 4, grey.shape
        self.grey, self.labels, self.seed, self.epoch = grey, labels, int(seed), epoch
        self._sample: tuple[int, torch.Tensor] | None = None

    @property
    def images(self) -> torch.Tensor:
        epoch = int(self.epoch())
        if self._sample is None or self._sample[0] != epoch:
            # one sample of the whole split per epoch: ~40 MB for MNIST, a fraction of a second
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            noise = torch.randint(0, 255, self.grey.shape, generator=g, dtype=torch.uint8)
            self._sample = (epoch, (noise < self.grey).to(torch.uint8))
        return self._sample[1]

    def __len__(self) -> int:
        return len(self.grey)


class BinarizedMNISTDataModule(MNISTDataModule):
    NAME, TITLE = "binarized_mnist", "binarized MNIST"
    SHAPE, LEVELS, NUM_CLASSES = (1, 28, 28), 2, None  # larochelle has no labels, the others have MNIST's ten

    def __init__(self, *args, binarization: str = "dynamic", **kwargs):
        if binarization not in CONVENTIONS:
            raise GenzooError(f"data.binarization={binarization} is not one of {', '.join(CONVENTIONS)}: choose one "
                              "(larochelle is the fixed binarisation most papers report on).")
        self.binarization = binarization
        self.epoch = 0  # used when no trainer drives the epochs
        super().__init__(*args, **kwargs)

    def validate(self) -> None:
        classes = 0 if self.binarization == "larochelle" else 10
        if self.num_classes != classes:
            raise GenzooError(f"data.num_classes={self.num_classes} does not match binarized MNIST with "
                              f"data.binarization={self.binarization}, which has {classes} classes: set "
                              f"data.num_classes={classes}.")
        if self.binarization == "dynamic" and self.num_workers:
            raise GenzooError("data.binarization=dynamic draws each epoch's sample in the training process: set "
                              "data.num_workers=0 (batches are indexed from memory, so workers add nothing).")

    @property
    def folder(self) -> Path:
        return self.data_dir / ("binarized_mnist" if self.binarization == "larochelle" else "MNIST")

    def source_files(self):
        if self.binarization == "larochelle":
            return [(self.folder / f"binarized_mnist_{s}.amat", None) for s in AMAT_SIZES]
        return super().source_files()

    def options(self) -> dict:
        return {"binarization": self.binarization, "verify": self.verify_checksums}

    def held_out(self) -> dict[str, int]:
        return {} if self.binarization == "larochelle" else super().held_out()

    def fetch(self) -> None:
        if self.binarization != "larochelle":
            return super().fetch()
        for split in AMAT_SIZES:
            if not (self.folder / f"binarized_mnist_{split}.amat").is_file():
                try:
                    download_url(AMAT_URL.format(split), str(self.folder))
                except Exception as e:  # noqa: BLE001 - without this the missing file afterwards hides why
                    raise download_failed(self.TITLE, self.folder, e, layout=", ".join(
                        f"binarized_mnist_{s}.amat" for s in AMAT_SIZES)) from None

    def decode(self, out):
        if self.binarization == "larochelle":
            splits = {}
            for split, name in (("train", "train"), ("valid", "val"), ("test", "test")):
                path = self.folder / f"binarized_mnist_{split}.amat"
                images = read_amat(path, AMAT_SIZES[split] if self.verify_checksums else None)
                splits[name] = (images, np.full(len(images), -1, dtype=np.int64))
            return splits
        return {"train": self.read_grey(train=True), "test": self.read_grey(train=False)}

    def _build(self, out) -> None:
        # Hold val out of the grey images first, then binarize: val/test once with split_seed (they never change),
        # train too unless it is sampled afresh each epoch.
        if self.binarization == "larochelle":
            return super()._build(out)
        super()._build(out)
        for path in sorted(out.folder.glob("*_images.npy")):
            split = path.name[: -len("_images.npy")]
            if self.binarization == "dynamic" and split == "train":
                continue
            grey = np.load(path)
            rng = np.random.default_rng([self.split_seed, ("train", "val", "test").index(split)])
            np.save(path, bernoulli(grey, rng))

    def make_dataset(self, split, images, labels):
        if self.binarization == "dynamic" and split == "train":
            return DynamicBinarizedDataset(images, labels, self.seed, self._current_epoch)
        return super().make_dataset(split, images, labels)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self.epoch
