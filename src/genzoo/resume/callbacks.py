"""The callbacks that make a resumed run continue exactly: what Lightning's checkpoints leave out.

Lightning saves the weights, optimisers, schedulers, loop progress and callback states, but no random-number
generator states (dropout masks and sampling after a resume would differ from an uninterrupted run), drops a
loader's saved position when the loader was built early, never deletes the step checkpoint a run resumed from, and
restores a one-cycle schedule with the length of the run that saved it. Every training run gets all of them
(:func:`resume_callbacks`), so a model needs no resume code of its own.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from genzoo.resume.sampler import ResumableLoader


class RngState(pl.Callback):
    """Saves and restores the Python, NumPy, torch CPU and CUDA generators with each checkpoint, as tensors and
    lists, so ``torch.load(weights_only=True)`` still reads the checkpoint.

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
    """Keeps the training loader's position (epoch, batches trained) current, and puts the loader back where a
    mid-epoch checkpoint left it.

    The position is set after every training batch from the hook's own ``batch_idx``; Lightning writes checkpoints
    after the other callbacks' hooks, so every checkpoint holds the position of the batch it follows. Lightning
    restores a stateful loader itself only if it builds the loader after restoring the loops; a model whose
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (the one-cycle schedule) makes Lightning
    build it earlier, and the saved position is then dropped. This hands it over at ``on_train_start``, which
    comes after the restore and before the sampler's first iterator (sized loaders are not prefetched).
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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.position = (trainer.current_epoch, batch_idx + 1)


class KeepNewestAfterResume(pl.Callback):
    """Deletes the step checkpoint a run resumed from once its callback has written a newer one.

    A ``ModelCheckpoint`` that keeps only its newest file (``save_top_k=1``, no monitor: genzoo's step checkpoint)
    deletes the previous file after writing the next, but Lightning never deletes the file the trainer resumed
    from, so every resume would leave one stale ``step*.ckpt`` behind. Once the newer file is on disk (written
    atomically) the old one is no longer needed to continue, and it goes. Files of another folder are never
    touched: a run resumed from a copy leaves the original run alone.
    """

    def __init__(self):
        self.source: Path | None = None
        self.watched: list = []

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
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


# What torch's OneCycleLR derives from its length: a restored state would bring back the saved run's length.
ONE_CYCLE_LENGTH_KEYS = ("total_steps", "_schedule_phases")


class ScheduleLength(pl.Callback):
    """A resumed run may be longer (``resume=... trainer.max_epochs=N``): it keeps the one-cycle length this run
    computed, or the checkpoint's shorter schedule would step past its end.

    torch has no public way to change a OneCycleLR's length; its state holds the length in the keys of
    ``ONE_CYCLE_LENGTH_KEYS`` (pinned by a test), which are dropped from the checkpoint before Lightning restores
    the schedulers (callbacks' ``on_load_checkpoint`` runs before the optimisers are restored)."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        for state in checkpoint.get("lr_schedulers", []):
            if "total_steps" in state:
                for key in ONE_CYCLE_LENGTH_KEYS:
                    state.pop(key, None)


def resume_callbacks() -> list[pl.Callback]:
    """The callbacks every training run gets, whatever its config: without them a resumed run would not continue
    exactly, and would leave a stale step checkpoint behind."""
    return [RngState(), LoaderPosition(), KeepNewestAfterResume(), ScheduleLength()]
