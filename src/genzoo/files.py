"""Writing a file so that a reader, a kill or a full disk never leaves half of it: the one way genzoo does it.

The bytes go to a temporary file beside the target (named by process and a random token, so two processes writing
the same entry never share one), are flushed to the disk (``fsync``), and the file is renamed over the target;
POSIX ``rename`` within one file system is atomic, and an fsync of the folder makes the rename itself durable.
On any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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


def one_line(e: BaseException, limit: int = 160) -> str:
    """The exception's class and the first line of its message, shortened: for warnings that must stay on one
    line (torch's unpickling errors, for one, run over many paragraphs)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_sha256(path: str | Path, _memo: dict = {}) -> str:  # noqa: B006 - a per-process memo on purpose
    """The sha256 of a file in hex, computed once per process for each (path, size, modification time)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
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
