"""The decode cache: each data set is decoded once into uint8 ``.npy`` arrays under ``paths.cache_dir``.

An entry is a folder ``{cache_dir}/data/{name}-{key}/`` holding ``{split}_images.npy`` (uint8 ``(N, C, H, W)``),
``{split}_labels.npy`` (int64 ``(N,)``) and ``source.json`` (what it was built from, for people). The key hashes
the options that change the decoded arrays and a fingerprint of every source file (path, size, modification
time), so a changed, added or removed source file builds a new entry instead of serving stale arrays. Entries are
built in a temporary folder and renamed into place, so an interrupted build or two processes building at once
never leave a half-written entry. Old entries are not deleted.

Arrays larger than ``MMAP_BYTES`` are memory-mapped copy-on-write: DDP ranks on one machine share the same page
cache, and nothing writes back to the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

MMAP_BYTES = 256 * 2**20


def fingerprint(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: cheap to compute, and changes whenever a file is replaced."""
    out = []
    for f in files:
        st = Path(f).stat()
        out.append((str(Path(f).resolve()), st.st_size, st.st_mtime_ns))
    return out


class CacheWriter:
    """Where a decoder puts its arrays: whole arrays with ``put``, or an empty memory-map to fill with ``empty``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def put(self, name: str, array: np.ndarray) -> None:
        np.save(self.folder / f"{name}.npy", np.ascontiguousarray(array))

    def empty(self, name: str, shape: tuple[int, ...], dtype=np.uint8) -> np.memmap:
        # written in place, so a 2.5 GB data set never needs to fit in memory twice
        return open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def cache_key(name: str, options: dict, files: Iterable[Path]) -> str:
    blob = json.dumps({"name": name, "options": options, "files": fingerprint(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_arrays(
    cache_dir: Path, name: str, options: dict, files: list[Path], decode: Callable[[CacheWriter], None]
) -> dict[str, np.ndarray]:
    """The arrays ``decode`` writes for these source files and options, decoding only when no entry matches."""
    key = cache_key(name, options, files)
    entry = Path(cache_dir) / "data" / f"{name}-{key}"
    if not (entry / "source.json").is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
        tmp.mkdir()
        try:
            decode(CacheWriter(tmp))
            (tmp / "source.json").write_text(json.dumps({"name": name, "options": options, "files": len(files)}))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process finished the same entry first: theirs is identical
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_entry(entry)


def load_entry(entry: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted(entry.glob("*.npy")):
        big = path.stat().st_size > MMAP_BYTES
        arrays[path.stem] = np.load(path, mmap_mode="c" if big else None)
    return arrays
