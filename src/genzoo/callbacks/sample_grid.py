"""A grid of samples drawn with a fixed seed every N epochs, saved as PNG and sent to the loggers.

A class-conditional model (``conditional`` true and ``num_classes > 0``: the conditional VAE, Gated PixelCNN,
PixelCNN++, DCGAN) gets one row per class, n // num_classes samples each (at least one), drawn with
``sample(n, y)``."""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from genzoo.nn.modes import evaluating


def image_grid(x: torch.Tensor, levels: int, min_size: int = 64, nrow: int | None = None) -> torch.Tensor:
    """(3, H', W') float grid in [0, 1] of integer images, upscaled (nearest) so small images stay legible.

    ``nrow`` images per row (default: a square grid)."""
    images = x.float().div(levels - 1).clamp(0, 1)
    scale = max(1, math.ceil(min_size / images.shape[-1]))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """True at the end of every ``every_n_epochs``-th training epoch and of the last one."""
    epoch = trainer.current_epoch + 1
    last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
    return not trainer.sanity_checking and (epoch % every_n_epochs == 0 or last)


def log_grid(trainer: pl.Trainer, key: str, grid: torch.Tensor, path: Path) -> None:
    """Send a grid already saved at ``path`` to the W&B and TensorBoard loggers (rank zero only)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)


def class_rows(model, n: int) -> tuple[torch.Tensor | None, int | None]:
    """(labels 0, 0, …, 1, 1, … with n // classes of each (at least one), per row) for a class-conditional model;
    (None, None) for any other."""
    classes = getattr(model, "num_classes", 0)
    if not getattr(model, "conditional", False) or classes <= 0:
        return None, None
    per_row = max(1, n // classes)
    return torch.arange(classes, device=model.device).repeat_interleave(per_row), per_row


class SampleGrid(pl.Callback):
    def __init__(self, dirpath: str, n: int = 64, every_n_epochs: int = 10, seed: int = 1234):
        self.dirpath, self.n, self.every_n_epochs, self.seed = Path(dirpath), int(n), int(every_n_epochs), seed

    @rank_zero_only
    def draw(self, trainer: pl.Trainer, pl_module, name: str) -> Path:
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), evaluating(pl_module):
            torch.manual_seed(self.seed)
            y, per_row = class_rows(pl_module, self.n)
            x = pl_module.sample(len(y), y) if y is not None else pl_module.sample(self.n)
        grid = image_grid(x.cpu(), pl_module.levels, nrow=per_row)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        save_image(grid, path)
        log_grid(trainer, "samples", grid, path)
        return path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if due(trainer, self.every_n_epochs):
            self.draw(trainer, pl_module, f"epoch_{trainer.current_epoch + 1:03d}")
