"""The decode cache: each data set is decoded once into uint8 ``.npy`` arrays under ``paths.cache_dir``.

An entry is a folder ``{cache_dir}/data/{name}-{key}/`` holding ``{split}_images.npy`` (uint8 ``(N, C, H, W)``),
``{split}_labels.npy`` (int64 ``(N,)``) and ``source.json`` (what it was built from, and what each array must be:
shape, dtype and file size). The key hashes the options that change the decoded arrays and a fingerprint of every
source file (path, size, modification time), so a changed, added or removed source file builds a new entry instead
of serving stale arrays. Entries are built in a temporary folder and renamed into place, so an interrupted build or
two processes building at once never leave a half-written entry. Old entries are not deleted.

The cache heals: every load checks each array's ``.npy`` header and file size against ``source.json`` (no hashing,
so a multi-GB array costs a few reads), and an entry that fails (a truncated, missing, foreign or rewritten array,
an unreadable ``source.json``) is rebuilt after one warning naming the file. The damaged entry stays in place until
a whole new one is ready, then is moved aside and replaced; a process that finds someone else's whole entry there
first uses it. An entry written before ``source.json`` recorded the arrays is checked by loading it (header, size,
dtype, images beside labels) and gets the record, so the next load is the cheap one.

A cache folder that cannot be written stops the run before the trainer is built, in one sentence naming
``paths.cache_dir`` and the fix: the decoded arrays have nowhere else to go (a large set does not fit in memory
twice). A whole entry in a read-only folder is still served.

Arrays larger than ``MMAP_BYTES`` are memory-mapped copy-on-write: DDP ranks on one machine share the same page
cache, and nothing writes back to the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from numpy.lib import format as npy
from numpy.lib.format import open_memmap

from genzoo.errors import GenzooError
from genzoo.files import fsync_folder, one_line, remove, write_atomically

log = logging.getLogger(__name__)
MMAP_BYTES = 256 * 2**20
CONVENTION = {"images": ("|u1", 4), "labels": ("<i8", 1)}  # array name suffix: (dtype, number of dimensions)


class DamagedEntry(Exception):
    """A file of a cache entry is not what the entry says it is."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class CacheUnwritable(GenzooError):
    """``paths.cache_dir`` refuses the files of a new entry."""


def unwritable(data_folder: Path, e: OSError) -> CacheUnwritable:
    cache_dir = data_folder.parent  # entries live in {cache_dir}/data/
    return CacheUnwritable(
        f"paths.cache_dir={cache_dir} cannot be written ({one_line(e)}), so the decoded arrays cannot be cached "
        "there: make it writable, or set paths.cache_dir to a writable folder (e.g. paths.cache_dir=/tmp/genzoo).")


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
        try:
            np.save(self.folder / f"{name}.npy", np.ascontiguousarray(array))
        except OSError as e:  # a full disk or a file system gone read-only while decoding
            raise unwritable(self.folder.parent, e) from None

    def empty(self, name: str, shape: tuple[int, ...], dtype=np.uint8) -> np.memmap:
        # written in place, so a 2.5 GB data set never needs to fit in memory twice
        try:
            return open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        except OSError as e:
            raise unwritable(self.folder.parent, e) from None


def cache_key(name: str, options: dict, files: Iterable[Path]) -> str:
    blob = json.dumps({"name": name, "options": options, "files": fingerprint(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_arrays(
    cache_dir: Path, name: str, options: dict, files: list[Path], decode: Callable[[CacheWriter], None]
) -> dict[str, np.ndarray]:
    """The arrays ``decode`` writes for these source files and options, decoding only when no whole entry
    matches: a damaged entry is rebuilt after one warning naming the damaged file."""
    key = cache_key(name, options, files)
    entry = Path(cache_dir) / "data" / f"{name}-{key}"
    if entry.exists() or entry.is_symlink():
        try:
            return load_entry(entry)
        except DamagedEntry as e:
            log.warning("The decoded-data cache file %s is damaged (%s): rebuilding its cache entry.", e.path,
                        e.reason)
    return build_entry(entry, {"name": name, "options": options, "files": len(files)}, decode)


def build_entry(entry: Path, source: dict, decode: Callable[[CacheWriter], None]) -> dict[str, np.ndarray]:
    """Decode into a temporary folder, record what each array is, and put the folder in place of ``entry``."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
        tmp.mkdir()
    except OSError as e:
        raise unwritable(entry.parent, e) from None
    try:
        decode(CacheWriter(tmp))
        arrays = {path.stem: header(path) for path in sorted(tmp.glob("*.npy"))}
        try:
            (tmp / "source.json").write_text(json.dumps({**source, "arrays": arrays}))
        except OSError as e:
            raise unwritable(entry.parent, e) from None
        return install(tmp, entry)
    finally:
        remove(tmp)


def install(tmp: Path, entry: Path, tries: int = 3) -> dict[str, np.ndarray]:
    """Rename ``tmp`` to ``entry`` and load it. Where an entry is already there, use it if it is whole (another
    process finished first: its arrays equal ours), else move it aside and try again."""
    for _ in range(tries):
        try:
            os.rename(tmp, entry)
        except OSError as e:
            if not (entry.exists() or entry.is_symlink()):  # nothing in the way: the folder refuses the rename
                raise unwritable(entry.parent, e) from None
            try:
                return load_entry(entry)
            except DamagedEntry:
                pass
            # Only a damaged entry is moved: a whole one arrives by a single rename, so it cannot be caught half-done.
            aside = entry.parent / f".{entry.name}.damaged-{os.getpid()}-{secrets.token_hex(3)}"
            try:
                os.rename(entry, aside)
            except FileNotFoundError:  # another process moved it first
                pass
            remove(aside)
            continue
        fsync_folder(entry.parent)
        return load_entry(entry)
    raise GenzooError(f"The decoded-data cache entry {entry} was replaced by a damaged one {tries} times while this "
                      "process rebuilt it: stop the other processes writing to paths.cache_dir and run again.")


def header(path: Path) -> dict:
    """Shape, dtype and byte size of a ``.npy`` file, from its header alone; a file whose size does not match its
    header (cut short, or with bytes after the array) raises ``DamagedEntry``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = read(f, max_header_size=2**20)
            offset = f.tell()
    except FileNotFoundError:
        raise DamagedEntry(path, "the file is missing") from None
    except (OSError, ValueError) as e:
        raise DamagedEntry(path, f"no readable .npy header: {one_line(e)}") from None
    if dtype.hasobject or fortran:
        raise DamagedEntry(path, f"a {'Fortran-ordered' if fortran else 'object'} array, not one genzoo writes")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise DamagedEntry(path, f"{size} bytes where its header, {shape} {dtype.name}, needs {expected}")
    return {"shape": list(shape), "dtype": dtype.str, "bytes": size}


def load_entry(entry: Path) -> dict[str, np.ndarray]:
    """The arrays of a whole entry; ``DamagedEntry`` names the first file that is not what it should be."""
    source_path = entry / "source.json"
    try:
        source = json.loads(source_path.read_text())
        recorded = source.get("arrays")
        if recorded is not None and not (isinstance(recorded, dict) and all(
                isinstance(v, dict) for v in recorded.values())):
            raise ValueError("its 'arrays' is not a mapping of array records")
    except FileNotFoundError:
        raise DamagedEntry(source_path, "the file is missing") from None
    except (OSError, ValueError, AttributeError) as e:  # AttributeError: valid JSON that is not an object
        raise DamagedEntry(source_path, f"unreadable: {one_line(e)}") from None
    if recorded is None:
        return upgrade(entry, source)
    for name, want in recorded.items():
        path = entry / f"{name}.npy"
        got = header(path)
        if got != want:
            raise DamagedEntry(path, f"{describe(got)} where the entry was built with {describe(want)}")
    check_convention(entry, recorded)
    return {name: read(entry / f"{name}.npy", want["bytes"]) for name, want in recorded.items()}


def upgrade(entry: Path, source: dict) -> dict[str, np.ndarray]:
    """An entry from before ``source.json`` recorded its arrays: check it by loading, then record them."""
    recorded = {path.stem: header(path) for path in sorted(entry.glob("*.npy"))}
    if not recorded:
        raise DamagedEntry(entry / "source.json", "the entry holds no .npy array")
    check_convention(entry, recorded)
    arrays = {name: read(entry / f"{name}.npy", want["bytes"]) for name, want in recorded.items()}
    try:
        write_atomically(entry / "source.json", json.dumps({**source, "arrays": recorded}))
    except OSError:  # a read-only cache still serves the entry; it is checked by loading again next time
        pass
    return arrays


def check_convention(entry: Path, recorded: dict[str, dict]) -> None:
    """``{split}_images`` uint8 (N, C, H, W) beside ``{split}_labels`` int64 (N,): a split without one of them, or
    with the two of different lengths, is a damaged entry (every genzoo decoder writes both)."""
    for name, want in recorded.items():
        split, _, kind = name.rpartition("_")
        if kind not in CONVENTION:
            continue
        dtype, ndim = CONVENTION[kind]
        if np.dtype(want["dtype"]).str != dtype or len(want["shape"]) != ndim:
            raise DamagedEntry(entry / f"{name}.npy", f"{describe(want)}, not a {ndim}-d {np.dtype(dtype).name} "
                                                      "array")
        other = f"{split}_{'labels' if kind == 'images' else 'images'}"
        if other not in recorded:
            raise DamagedEntry(entry / f"{other}.npy", "the file is missing")
        if recorded[other]["shape"][0] != want["shape"][0]:
            raise DamagedEntry(entry / f"{name}.npy", f"{want['shape'][0]} rows beside {recorded[other]['shape'][0]} "
                                                      f"in {other}.npy")


def describe(record: dict) -> str:
    """``(6, 1, 28, 28) uint8 in 4832 bytes``, or the raw record where it cannot say so."""
    try:
        return f"{tuple(record['shape'])} {np.dtype(record['dtype']).name} in {record['bytes']} bytes"
    except (KeyError, TypeError, ValueError):
        return json.dumps(record)


def read(path: Path, size: int) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c" if size > MMAP_BYTES else None)
    except (OSError, ValueError) as e:  # replaced or cut between the header check and the read
        raise DamagedEntry(path, one_line(e)) from None
