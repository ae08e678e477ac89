"""Checkpoints: written so that a kill or a full disk never leaves half of one, found in a run folder, read with
``weights_only=True``, and loaded into the model their run's config describes."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through :func:`genzoo.files.write_atomically`.

    Lightning writes through fsspec, whose local "transaction" stages the bytes in the system temp folder and
    *moves* them into place: a copy across file systems, so a kill or a full disk mid-copy leaves a truncated
    ``last.ckpt``. Here the checkpoint is serialised first (a failure there touches no file), then written beside
    its target and renamed over it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        import torch

        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            write_atomically(path, buffer.getbuffer())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                kept = f"; the last good checkpoint {path} is intact" if path.exists() else ""
                raise GenzooError(
                    f"The disk holding {path.parent} is full, so the checkpoint could not be written{kept}: free "
                    f"some space (or set paths.output_dir to a larger disk) and continue with resume=RUN_DIR."
                ) from None
            raise


def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A genzoo checkpoint read with ``weights_only=True``; one sentence when it is truncated, corrupt or foreign.

    ``mmap``: only check that it reads (tensors stay on disk), as ``resume=`` does before training."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing to the user
        raise GenzooError(f"{path} is not a readable checkpoint ({type(e).__name__}: it is truncated, corrupt or "
                          "not a Lightning checkpoint): use another file in its checkpoints/ folder, or start a new "
                          "run.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise GenzooError(f"{path} holds no model weights (no 'state_dict'): give a checkpoint written by "
                          "genzoo-train.")
    return ckpt


def find_checkpoint(path: str | Path, arg: str = "resume", best: bool = False) -> tuple[Path, Path | None]:
    """(checkpoint, its run folder or None) for a run folder or a checkpoint file given to ``arg=``.

    In a run folder: the best checkpoint when ``best`` (``genzoo-eval``), otherwise, and where there is no best
    one, the newer of the end-of-epoch and the every-N-steps checkpoint (where a killed run continues)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        candidates = sorted(p.glob("checkpoints/best-*.ckpt")) if best else []
        candidates = candidates or [c for c in [p / "checkpoints" / "last.ckpt", *p.glob("checkpoints/step*.ckpt")]
                                    if c.is_file()]
        if not candidates:
            raise GenzooError(f"{arg}={path} is a folder without checkpoints/last.ckpt: give a genzoo run folder "
                              "that has saved a checkpoint, or the path of a .ckpt file.")
        return max(candidates, key=lambda c: c.stat().st_mtime_ns), p
    if not p.is_file():
        raise GenzooError(f"{arg}={path} does not exist: give a genzoo run folder or a .ckpt file.")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
    if run_dir is not None and not (run_dir / "config.yaml").is_file():
        run_dir = None
    return p, run_dir


def find_run_checkpoint(path: str) -> tuple[Path, Path]:
    """(checkpoint, the run folder holding its config.yaml) for ``ckpt=`` a run folder or a .ckpt file."""
    ckpt, run_dir = find_checkpoint(path, arg="ckpt", best=True)
    if run_dir is None and (ckpt.parent / "config.yaml").is_file():  # a checkpoint kept beside its config
        run_dir = ckpt.parent
    if run_dir is None:
        raise GenzooError(f"ckpt={path} has no config.yaml of its run beside checkpoints/: give a checkpoint inside "
                          "a genzoo run folder (run_dir/checkpoints/NAME.ckpt).")
    return ckpt, run_dir


def check_weights_fit(model, state_dict: dict, ckpt: Path, fix: str) -> None:
    """Stop with one sentence when the checkpoint's tensors are not the model's (names and shapes), before
    anything is written: ``load_state_dict`` would list every missing key in a traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    resized = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or resized):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's tensors are missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} are not the model's, e.g. {unexpected[0]}")
    if resized:
        k = resized[0]
        parts.append(f"{len(resized)} have another shape, e.g. {k} is {list(state_dict[k].shape)} there and "
                     f"{list(own[k].shape)} in the model")
    raise GenzooError(f"The weights in {ckpt} do not fit the model of {type(model).__name__}'s config "
                      f"({'; '.join(parts)}): {fix}.")


def load_model(ckpt: Path, saved: DictConfig):
    """The model of the saved config with the checkpoint's weights; one sentence when either is wrong."""
    state = read_checkpoint(ckpt)["state_dict"]
    model = build(saved.model, "model")
    check_weights_fit(model, state, ckpt, "give the checkpoint of the run whose config.yaml is beside it")
    model.load_state_dict(state)
    return model
