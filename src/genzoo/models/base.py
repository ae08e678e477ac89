"""The promise every genzoo model keeps, and the metrics written once around it.

A model can ``sample(n)`` integers in ``0 … levels-1``, may give ``log_likelihood(x)`` (natural log, per image;
exact, or a lower bound), and trains itself through ``loss``. This base class turns the likelihood into
bits/dim,

    bpd = -log p(x) / (C·H·W·ln 2),

logs it as ``{val,test}/bpd`` for exact models and ``{val,test}/elbo_bpd`` for bounds (synced over devices), and
owns the optimiser: AdamW with an optional one-cycle schedule (Smith & Topin 2018).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import Container, OmegaConf
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.nn.distributions import scaled


class GenerativeModel(pl.LightningModule):
    likelihood: Literal["exact", "bound", None] = None

    def __init__(
        self,
        shape: Sequence[int],
        levels: int,
        num_classes: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: Literal["onecycle", "none"] = "none",
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
    ):
        super().__init__()
        if len(shape) != 3 or min(shape) < 1:
            raise GenzooError(f"shape={list(shape)} is not an image shape: give (channels, height, width).")
        if int(levels) < 2:
            raise GenzooError(f"levels={levels} leaves nothing to model: discrete images need at least 2 levels.")
        if scheduler not in ("onecycle", "none"):
            raise GenzooError(f"model.scheduler={scheduler!r} is unknown: use 'onecycle' or 'none'.")
        self.shape = tuple(int(s) for s in shape)
        self.levels = int(levels)
        self.num_classes = int(num_classes)
        self.lr, self.weight_decay, self.scheduler_name = float(lr), float(weight_decay), scheduler
        self.monitor, self.mode = monitor, mode

    def save_hyperparameters(self, *args, frame=None, **kwargs) -> None:
        """Lightning's, with OmegaConf nodes kept as plain dicts and lists: ``hydra.utils.instantiate`` without
        ``_convert_`` hands a model its network options (``net``) as a DictConfig, and a checkpoint holding one no
        longer loads with ``torch.load(weights_only=True)``."""
        # Lightning collects the arguments of the constructor that called it: that is the one calling this.
        super().save_hyperparameters(*args, frame=frame or inspect.currentframe().f_back, **kwargs)
        for key, value in self.hparams.items():
            if isinstance(value, Container):
                self.hparams[key] = OmegaConf.to_container(value, resolve=True)

    # ---- what a model writes -------------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) natural-log likelihood of each integer image (or a lower bound, see ``likelihood``)."""
        raise GenzooError(f"{type(self).__name__} has no likelihood: it reports no bits/dim.")

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """(n, C, H, W) integer images in 0 … levels-1, drawn with the global torch RNG."""
        raise GenzooError(f"{type(self).__name__} cannot sample.")

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Training loss of a batch; for likelihood models the negative log-likelihood in bits/dim."""
        return self.bits_per_dim(self.log_likelihood(x, y)).mean()

    # ---- shared helpers ------------------------------------------------------------------------------------
    @property
    def dims(self) -> int:
        return math.prod(self.shape)

    def bits_per_dim(self, log_likelihood: Tensor) -> Tensor:
        return -log_likelihood / (self.dims * math.log(2))

    def scale(self, x: Tensor) -> Tensor:
        """Integer images to floats in [-1, 1] on the model's device."""
        return scaled(self.levels, x)

    def step_generator(self) -> torch.Generator:
        """A generator for the draws of this training step alone (a GAN's noise), seeded by (the run's seed, the
        process's rank, the step): a resumed run draws what an uninterrupted one would without saving a stream,
        and DDP ranks, seeded alike, draw their own. The run's seed is torch's initial seed, which
        ``seed_everything`` sets and a checkpoint's saved RNG state restores."""
        key = [torch.initial_seed() % 2**63, self.global_rank, self.global_step]
        seed = int(np.random.SeedSequence(key).generate_state(2, np.uint64)[0] % 2**63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def check_conditional(self, conditional: bool) -> None:
        """A model asked to condition on the class (``model.conditional=true``) needs data that has classes."""
        if conditional and self.num_classes == 0:
            raise GenzooError("model.conditional=true needs labelled data, and this data has no classes: "
                              "set model.conditional=false.")

    def labels_or_none(self, y: Tensor | None) -> Tensor | None:
        """Class labels when the model is conditional, else None (unlabelled data carries -1)."""
        return y if (self.num_classes > 0 and y is not None) else None

    # ---- divergence -----------------------------------------------------------------------------------------
    divergence_patience = 10  # steps in a row above the limit: one wild batch is no divergence

    def loss_limit(self, key: str) -> tuple[float, str] | None:
        """(the value of training loss ``key`` that no sane run reaches, why), or None for no limit. A likelihood
        model's loss is in bits/dim, where guessing every level uniformly costs log2(levels): three times that is
        far past the worst a model with any training should do."""
        if self.likelihood is None:
            return None
        uniform = math.log2(self.levels)
        return 3 * uniform, f"3× the {uniform:.3g} bits/dim of a uniform guess over the {self.levels} levels"

    def check_loss(self, loss: Tensor, key: str, what: str, where: str, hint: str = "") -> None:
        """Stop before a non-finite loss reaches the weights (so the last checkpoint holds good ones), and stop a run
        whose loss stays past :meth:`loss_limit` for ``divergence_patience`` steps: a diverged run that finishes
        would keep its number as a result. ``what``, ``where``: 'training loss', 'at step 12', for the sentence.
        Every DDP rank takes the same decision."""
        limit = self.loss_limit(key)
        value = loss.detach().float()
        above = value > limit[0] if limit else torch.zeros_like(value, dtype=torch.bool)
        flags = torch.stack([~torch.isfinite(value), above])
        if self._trainer is not None and self.trainer.world_size > 1:
            flags = self.trainer.strategy.reduce(flags.float(), reduce_op="sum")  # no rank left in a collective
        non_finite, above = (bool(f > 0) for f in flags)
        fix = f"lower model.lr (now {self.lr:g}){hint} or check the data"
        if non_finite:
            raise GenzooError(f"The {what} became {value.item()} {where}: {fix}.")
        steps = getattr(self, "_steps_above", {})
        steps[key] = steps.get(key, 0) + 1 if above else 0
        self._steps_above = steps
        if steps[key] >= self.divergence_patience:
            raise GenzooError(f"The {what} stayed above {limit[0]:.3g} ({limit[1]}) for {steps[key]} steps in a row, "
                              f"{value.item():.3g} {where}, so the run diverged and stops here: {fix}.")

    # ---- Lightning -----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(x, y)
        self.check_loss(loss, "train/loss", "training loss", f"at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        """Per-image metrics of a validation or test batch, each ``(B,)``; logged as ``{stage}/{key}``."""
        if self.likelihood == "exact":
            return {"bpd": self.bits_per_dim(self.log_likelihood(x, y))}
        if self.likelihood == "bound":
            return {"elbo_bpd": self.bits_per_dim(self.log_likelihood(x, y))}
        return {}

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        for key, values in self.evaluation_metrics(x, y, stage).items():
            self.log(f"{stage}/{key}", values.mean(), sync_dist=True, batch_size=len(x), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "none":
            return opt
        steps = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=max(steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
