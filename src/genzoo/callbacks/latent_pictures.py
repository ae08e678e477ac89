"""Pictures of a model's code space: reconstructions, interpolations and (for a 2-D code) the manifold grid.

For a model with ``encode(x) -> (B, z_dim)``, ``decode(z) -> (B, C, H, W)`` (floats on the 0 … levels-1 scale)
and ``code_prior() -> (mean (z_dim,), Cholesky factor (z_dim, z_dim))`` — the autoencoder and the VAE — it draws,
from fixed images of one split (the test split by default):

* ``reconstructions``: a row of inputs above the row of their reconstructions decode(encode(x));
* ``interpolations``: per row, two images and between them decode((1−t)·z_a + t·z_b) for t from 0 to 1;
* ``manifold`` (z_dim = 2 only): decode(μ + L·Φ⁻¹(u)) over a grid of u in (0, 1)², as in Kingma & Welling (2014,
  fig. 4), whose prior makes μ = 0, L = I.

Every ``every_n_epochs`` epochs and at the last one as ``{name}_epoch_{NNN}.png``, and at test (the tested
checkpoint) as ``{name}_test.png``, under ``samples/`` and to W&B / TensorBoard. Other models are skipped, and so
is a conditional VAE, whose code means something only together with a label.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import save_image

from genzoo.callbacks.sample_grid import due, image_grid, log_grid
from genzoo.nn.modes import evaluating


def has_code(pl_module) -> bool:
    if getattr(pl_module, "conditional", False):
        return False
    return all(hasattr(pl_module, name) for name in ("encode", "decode", "code_prior"))


class LatentPictures(pl.Callback):
    def __init__(self, dirpath: str, every_n_epochs: int = 10, n: int = 10, pairs: int = 4, steps: int = 8,
                 grid: int = 15, split: str = "test", seed: int = 1234):
        self.dirpath, self.every_n_epochs, self.split, self.seed = Path(dirpath), int(every_n_epochs), split, seed
        self.n, self.pairs, self.steps, self.grid = int(n), int(pairs), int(steps), int(grid)

    def images(self, trainer: pl.Trainer) -> torch.Tensor | None:
        """The same ``n`` (at least 2·pairs) images of the split every time, chosen by ``seed``."""
        splits = getattr(trainer.datamodule, "splits", None) or {}
        if self.split not in splits:
            return None
        images = splits[self.split].images
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        return images[order[: max(self.n, 2 * self.pairs)]]

    def _save(self, trainer, key: str, images: torch.Tensor, levels: int, nrow: int, tag: str) -> None:
        grid = image_grid(images.float().cpu(), levels, nrow=nrow)
        path = self.dirpath / f"{key}_{tag}.png"
        save_image(grid, path)
        log_grid(trainer, key, grid, path)

    @rank_zero_only
    @torch.no_grad()
    def draw(self, trainer: pl.Trainer, pl_module, tag: str) -> None:
        if not has_code(pl_module):
            return
        x = self.images(trainer)
        if x is None or len(x) == 0:
            return
        with evaluating(pl_module):
            x, levels = x.to(pl_module.device), pl_module.levels
            self.dirpath.mkdir(parents=True, exist_ok=True)
            z = pl_module.encode(x)  # (N, z_dim)

            shown = x[: self.n]
            recon = pl_module.decode(z[: self.n])
            self._save(trainer, "reconstructions", torch.cat([shown.float(), recon]), levels, len(shown), tag)

            pairs = min(self.pairs, len(x) // 2)  # a split smaller than 2·pairs images gives fewer rows
            if pairs > 0 and self.steps > 0:
                za, zb = z[:pairs], z[pairs: 2 * pairs]  # (pairs, z_dim) each
                t = torch.linspace(0, 1, self.steps, device=z.device).view(1, -1, 1)
                path = torch.lerp(za[:, None], zb[:, None], t).flatten(0, 1)  # (pairs·steps, z_dim)
                between = pl_module.decode(path).unflatten(0, (pairs, self.steps))  # (pairs, steps, C, H, W)
                ends = x.float()
                rows = torch.cat([ends[:pairs, None], between, ends[pairs: 2 * pairs, None]], dim=1)
                self._save(trainer, "interpolations", rows.flatten(0, 1), levels, self.steps + 2, tag)

            if z.shape[1] == 2 and self.grid > 1:
                mean, scale = pl_module.code_prior()
                u = torch.linspace(0.05, 0.95, self.grid, device=z.device)
                normal = torch.distributions.Normal(0.0, 1.0).icdf(u)
                # rows run from high to low second coordinate, so the picture reads like a plot
                eps = torch.stack(torch.meshgrid(normal.flip(0), normal, indexing="ij")[::-1], dim=-1).view(-1, 2)
                self._save(trainer, "manifold", pl_module.decode(mean + eps @ scale.T), levels, self.grid, tag)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if due(trainer, self.every_n_epochs):
            self.draw(trainer, pl_module, f"epoch_{trainer.current_epoch + 1:03d}")

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.draw(trainer, pl_module, "test")
