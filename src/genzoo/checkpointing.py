"""What a checkpoint needs so that a run killed at any moment continues exactly: atomic files and RNG states.

Lightning saves optimiser, schedulers, loop progress (epoch, step, batch within the epoch) and callback states,
but (a) writes a checkpoint through fsspec, whose local "transaction" stages the bytes in the system temp folder and
*moves* them into place — a copy across file systems, so a kill or a full disk mid-copy leaves a truncated
``last.ckpt``; and (b) stores no random-number generator states, so dropout masks and sampling after a resume differ
from an uninterrupted run. ``AtomicCheckpointIO`` writes beside the target, fsyncs and renames (POSIX ``rename`` is
atomic within a file system); ``RngState`` stores every generator's state as tensors and lists, so
``torch.load(weights_only=True)`` still reads the checkpoint.
"""

from __future__ import annotations

import errno
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from genzoo.data.sampler import ResumableLoader
from genzoo.errors import GenzooError


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``.NAME.tmp`` in the checkpoint's own folder, fsync, then rename over ``NAME``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a failure here touches no file
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                kept = f"; the last good checkpoint {path} is intact" if path.exists() else ""
                raise GenzooError(
                    f"The disk holding {path.parent} is full, so the checkpoint could not be written{kept}: free "
                    f"some space (or set paths.output_dir to a larger disk) and continue with resume=RUN_DIR."
                ) from None
            raise


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after ``os.replace`` could otherwise lose it)."""
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


class RngState(pl.Callback):
    """Saves and restores the Python, NumPy, torch CPU and CUDA generators with each checkpoint.

    The state is taken when the checkpoint is written (after a training batch or at the end of an epoch), which is
    where an uninterrupted run's generators stand before its next batch.
    """

    def state_dict(self) -> dict[str, Any]:
        version, mt, gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        return {
            "python": [version, list(mt), gauss],
            "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                      float(np_gauss)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, mt, gauss = state["python"]
        random.setstate((version, tuple(mt), gauss))
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
        np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class LoaderPosition(pl.Callback):
    """Puts the training loader back where a mid-epoch checkpoint left it.

    Lightning restores a stateful loader itself only if it builds the loader after restoring the loops; a model
    whose ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (the one-cycle schedule) makes
    Lightning build it earlier, and the saved position is then dropped. This hands it over at ``on_train_start``,
    which comes after the restore and before the sampler's first iterator (sized loaders are not prefetched).
    """

    def __init__(self):
        self.saved: list[dict] = []

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self.saved = list(fit_state.get("combined_loader", []))

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        saved, self.saved = self.saved, []
        loader = trainer.train_dataloader  # genzoo's datamodules give one training loader
        if len(saved) == 1 and isinstance(loader, ResumableLoader):
            loader.load_state_dict(saved[0])  # the same call Lightning would make; repeating it is harmless


class KeepNewestAfterResume(pl.Callback):
    """Deletes the step checkpoint a run resumed from once its callback has written a newer one.

    A ``ModelCheckpoint`` that keeps only its newest file (``save_top_k=1``, no monitor: genzoo's step checkpoint)
    deletes the previous file after writing the next, but Lightning never deletes the file the trainer resumed
    from, so every resume would leave one stale ``step*.ckpt`` behind. Once the newer file is on disk (written
    atomically by :class:`AtomicCheckpointIO`) the old one is no longer needed to continue, and it goes. Files of
    another folder are never touched: a run resumed from a copy leaves the original run alone.
    """

    def __init__(self):
        self.source: Path | None = None
        self.watched: list = []

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        from pytorch_lightning.callbacks import ModelCheckpoint

        self.source, self.watched = None, []
        if trainer.ckpt_path is None:
            return
        source = Path(trainer.ckpt_path).absolute()
        for cb in trainer.checkpoint_callbacks:
            # the restored state names the file it last wrote; in a moved run folder only the name still matches
            if (isinstance(cb, ModelCheckpoint) and cb.save_top_k == 1 and cb.monitor is None and cb.dirpath
                    and Path(cb.dirpath).absolute() == source.parent and cb.best_model_path
                    and Path(cb.best_model_path).name == source.name):
                self.watched.append(cb)
        self.source = source if self.watched else None

    def _drop(self, trainer: pl.Trainer) -> None:
        if self.source is None:
            return
        for cb in self.watched:
            newer = Path(cb.best_model_path) if cb.best_model_path else None
            if newer is not None and newer.name != self.source.name and newer.is_file():
                if self.source.is_file():
                    trainer.strategy.remove_checkpoint(self.source)
                self.source, self.watched = None, []
                return

    # the step checkpoint is written in on_train_batch_end, after this callback's own hook (Lightning runs
    # checkpoint callbacks last): the next hook sees it
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        self._drop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._drop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._drop(trainer)
