"""Datamodules of files on disk: where the files are, what to say when they are missing or damaged, the decode cache
and the fixed hold-out split.

A subclass names its source files (``source_files``), decodes them once with torchvision's readers (``decode``),
and may download them (``fetch``). Everything else is shared: the missing-file check in the constructor (so a run
stops before the trainer is built), the cache under ``paths.cache_dir`` keyed by the files and the options, and a
validation split held out of the training split by ``split_seed`` where the data set has none of its own.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.utils import calculate_md5

from genzoo.data.base import ImageDataModule
from genzoo.data.cache import CacheWriter, cached_arrays
from genzoo.errors import GenzooError

SPLITS = ("train", "val", "test")


def missing_file(title: str, path: Path, folder: Path) -> GenzooError:
    return GenzooError(
        f"The {title} file {path} is missing: put the {title} files in {folder} (torchvision's layout) "
        "or set data.download=true."
    )


class DownloadFailed(Exception):
    """Raised by a reader's ``download()`` (see ``Downloads``) with the original exception as ``cause``: the files
    it would have written are missing afterwards, and without this the missing file would hide why."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class Downloads:
    """Mixin for torchvision's readers, put before the reader in the bases: a failure inside its ``download()``
    (no network, a refused or changed URL, a corrupt transfer) becomes ``DownloadFailed``, which ``read_with``
    reports as a failed download; a failure afterwards, reading files that are there, stays a file problem."""

    def download(self) -> None:
        try:
            super().download()
        except Exception as e:  # noqa: BLE001 - urllib, socket, torchvision and gdown each raise their own
            raise DownloadFailed(e) from e


def short_reason(e: BaseException, limit: int = 160) -> str:
    """The exception's class and message on one line, shortened: torchvision's MNIST joins one error per mirror
    over several lines, whose first (which file) and last (the latest mirror's error) say the most."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " … ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def download_failed(title: str, folder: Path, e: BaseException, layout: str = "torchvision's layout") -> GenzooError:
    return GenzooError(
        f"Downloading the {title} files into {folder} failed ({short_reason(e)}): check the network and run again, "
        f"or download the {title} files by hand into {folder} ({layout}) and set data.download=false."
    )


def file_problem(title: str, files: list[tuple[Path, str | None]], folder: Path, verify: bool) -> GenzooError | None:
    """The first missing file, or with ``verify`` the first whose md5 sum differs from the published one."""
    for path, _ in files:
        if not Path(path).is_file():
            return missing_file(title, path, folder)
    for path, md5 in files:
        if verify and md5 and calculate_md5(path) != md5:
            return GenzooError(
                f"The {title} file {path} is corrupt (its md5 sum is not the published {md5}): delete it and set "
                "data.download=true or copy it again (data.verify_checksums=false skips this check)."
            )
    return None


def read_with(title: str, files: list[tuple[Path, str | None]], folder: Path, verify: bool, make):
    """Run a torchvision reader, turning its generic 'not found or corrupted' into a sentence naming the file, and
    a failed download (``Downloads``) into one naming its reason."""
    try:
        return make()
    except GenzooError:
        raise
    except DownloadFailed as e:
        raise download_failed(title, folder, e.cause) from None
    except Exception as e:  # torchvision raises RuntimeError; a truncated pickle or .mat raises its own errors
        problem = file_problem(title, files, folder, verify)
        if problem is not None:
            raise problem from None
        names = ", ".join(Path(p).name for p, _ in files)
        raise GenzooError(
            f"The {title} files in {folder} ({names}) cannot be read ({type(e).__name__}: {e}): replace the "
            "damaged file with a fresh copy, or delete it and set data.download=true."
        ) from None


class DiskDataModule(ImageDataModule):
    """A data set read from ``paths.data_dir``, decoded once into the cache, split by ``split_seed``."""

    TITLE = ""  # how people write the data set's name, for messages
    FOLDER = ""  # the data set's folder under data_dir, as torchvision lays it out

    def __init__(self, *args, data_dir: str, cache_dir: str, download: bool = False, verify_checksums: bool = True,
                 val_size: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_dir, self.cache_dir = Path(data_dir).expanduser(), Path(cache_dir).expanduser()
        self.download, self.verify_checksums = bool(download), bool(verify_checksums)
        self.val_size = int(val_size)
        self._arrays: dict[str, np.ndarray] | None = None
        self.validate()
        if not self.download:
            # Decode now (or find the cache) and check shape and levels, so missing, damaged or disagreeing files
            # stop the run before the trainer is built. With data.download=true this waits for prepare_data, which
            # Lightning runs on one process per machine, so DDP ranks do not download at once.
            self.setup()

    def validate(self) -> None:
        """Checks of the subclass's own options, run before any file is read."""

    @property
    def folder(self) -> Path:
        return self.data_dir / self.FOLDER

    @abstractmethod
    def source_files(self) -> list[tuple[Path, str | None]]:
        """Every file the decoder reads, with its published md5 sum where torchvision knows one."""

    @abstractmethod
    def decode(self, out: CacheWriter) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The official splits as (uint8 images (N, C, H, W), int64 labels (N,)); a large set may instead write
        ``{split}_images``/``{split}_labels`` into ``out`` itself and return only what it did not write."""

    def fetch(self) -> None:
        raise GenzooError(f"genzoo cannot download {self.TITLE}: put its files in {self.folder} and set "
                          "data.download=false.")

    def options(self) -> dict:
        """Settings that change the decoded arrays, beside the source files: part of the cache key."""
        return {}

    def held_out(self) -> dict[str, int]:
        """Splits cut out of the training split, and their sizes, where the data set has none of its own."""
        return {"val": self.val_size}

    def check_present(self) -> None:
        for path, _ in self.source_files():
            if not Path(path).is_file():
                raise missing_file(self.TITLE, path, self.folder)

    def title_read(self, files, make):
        return read_with(self.TITLE, files, self.folder, self.verify_checksums, make)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per machine: download and decode there, the others load the cache.
        if self.download:
            self.fetch()
        self.arrays()

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self.check_present()
            options = {**self.options(), "held_out": self.held_out(), "split_seed": self.split_seed}
            files = [Path(p) for p, _ in self.source_files()]
            self._arrays = cached_arrays(self.cache_dir, self.NAME, options, files, self._build)
        return self._arrays

    def _build(self, out: CacheWriter) -> None:
        splits = self.decode(out)
        held_out = {k: v for k, v in self.held_out().items() if k not in splits}
        if held_out:
            splits.update(self.hold_out(*splits.pop("train"), held_out))
        for name, (images, labels) in splits.items():
            out.put(f"{name}_images", images)
            out.put(f"{name}_labels", np.asarray(labels, dtype=np.int64))

    def hold_out(self, images: np.ndarray, labels: np.ndarray, sizes: dict[str, int]):
        """Cut ``sizes`` images out of the training split, at random positions fixed by ``split_seed`` alone."""
        n = len(images)
        if any(s < 1 for s in sizes.values()) or sum(sizes.values()) >= n:
            asked = ", ".join(f"data.{k}_size={v}" for k, v in sizes.items())
            raise GenzooError(f"{asked} do not fit the {n} {self.TITLE} training images: choose sizes of at least "
                              f"1 that leave training images (together below {n}).")
        order = np.random.default_rng(self.split_seed).permutation(n)
        out, start = {}, 0
        for name, size in sizes.items():
            part = np.sort(order[start:start + size])
            out[name] = (images[part], labels[part])
            start += size
        rest = np.sort(order[start:])
        out["train"] = (images[rest], labels[rest])
        return out

    def load_splits(self):
        arrays = self.arrays()
        return {name: (torch.from_numpy(arrays[f"{name}_images"]), torch.from_numpy(arrays[f"{name}_labels"]))
                for name in SPLITS if f"{name}_images" in arrays}
