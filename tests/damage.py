"""Damage a cache file as a crash, a full disk or a stray write would, and find the one warning naming it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

BYTES = ("truncated", "zero bytes", "random bytes")


def damage(path: Path, kind: str) -> None:
    """Damage ``path`` as a crash, a full disk or a stray write would."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, max(len(data), 64), dtype=np.uint8).tobytes())
    else:
        raise ValueError(kind)
    later = path.stat().st_mtime_ns + 10**9  # damage turns up in a later run: a later modification time
    os.utime(path, ns=(later, later))


def the_one_warning(caplog, path: Path) -> str:
    """The single warning logged, which names ``path`` on one line."""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "\n" not in warnings[0], warnings[0]
    return warnings[0]
