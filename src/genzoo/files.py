"""Writing a file so that a reader, a kill or a full disk never leaves half of it: the one way genzoo does it.

The bytes go to a temporary file beside the target (named by process and a random token, so two processes writing
the same entry never share one), are flushed to the disk (``fsync``), and the file is renamed over the target;
POSIX ``rename`` within one file system is atomic, and an fsync of the folder makes the rename itself durable.
On any failure the temporary file is removed and the target is left as it was.

Beside it, the small helpers the caches under ``paths.cache_dir`` share: saving where a read-only cache folder
only warns, a file hash computed once per process, a one-line reason for a warning, and deleting a damaged entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or call uses."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


def fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, data: str | bytes | memoryview | Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` by ``data`` (text as UTF-8, bytes, or a function that writes into the open file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def save_atomically(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`write_atomically`."""
    import torch

    write_atomically(path, lambda f: torch.save(obj, f))


def save_to_cache(obj, path: str | Path, cache_dir: str | Path, what: str, _warned: set = set()) -> bool:  # noqa: B006
    """``save_atomically`` for a file under ``paths.cache_dir``: where the folder refuses it (read-only, full), one
    warning per process and cache folder naming it and the fix, and False; the caller goes on with ``obj`` in
    memory, so a run never stops for a cache it could not keep."""
    try:
        save_atomically(obj, path)
        return True
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        if str(cache_dir) not in _warned:
            _warned.add(str(cache_dir))
            log.warning("%s cannot be cached at %s (%s): going on without caching it (and other files there); make "
                        "paths.cache_dir=%s writable, or point it at a writable folder, to keep them for the next run.",
                        what, path, one_line(e), cache_dir)
        return False


def one_line(e: BaseException, limit: int = 160) -> str:
    """The exception's class and the first sentence of its message, shortened: for warnings that must stay on one
    line (torch's unpickling errors, for one, run over many paragraphs)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = lines[0].split(". ", 1)[0].rstrip(".") + "." if lines else ""  # its first sentence says the most
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_sha256(path: str | Path, _memo: dict = {}) -> str:  # noqa: B006 - a per-process memo on purpose
    """The sha256 of a file in hex, computed once per process for each version of the file (path, inode, size,
    modification and change times: a file replaced by a rename or rewritten in place hashes again)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _memo:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _memo[key] = digest.hexdigest()
    return _memo[key]


def remove(path: Path) -> None:
    """Delete a file or a folder tree, whichever ``path`` is; a path already gone is no error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
