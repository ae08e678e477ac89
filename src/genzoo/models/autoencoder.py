"""Autoencoder: learn a code ``z = f(x)`` smaller than ``x`` without labels, by reconstruction,

    min_{f, g}  E_x ‖g(f(x)) − x‖²,

with ``x`` scaled to [-1, 1], so that the encoder ``f`` can be reused as features for a small labelled set (the
``LinearProbe`` callback measures that). Encoder and decoder are ``genzoo.nn.autoencoder``'s networks, shared with
the VAE; ``model.net.arch=conv`` (the default) takes 8×8, 28×28, 32×32 and 64×64 images, ``model.net.arch=mlp``
any shape.

It has no likelihood (``likelihood = None``) and, being no density model, no sampler of its own: ``sample``
decodes codes drawn from a full-covariance Gaussian fitted to the codes of the latest training epoch (see
``sample``). Left out: denoising, sparsity or contractive penalties; the code is deterministic and unregularised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.models.base import GenerativeModel
from genzoo.nn import build_network
from genzoo.nn.autoencoder import encoder_decoder


class Autoencoder(GenerativeModel):
    likelihood = None

    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        z_dim: int = 32,
        net: dict | None = None,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        self.z_dim = int(z_dim)
        self.encoder, self.decoder = build_network(
            encoder_decoder, net, shape=self.shape, z_dim=self.z_dim, encoder_out=self.z_dim,
            decoder_out_channels=self.shape[0],
        )
        # The Gaussian that `sample` draws codes from; N(0, I) until a training epoch has seen enough codes.
        self.register_buffer("code_mean", torch.zeros(self.z_dim))
        self.register_buffer("code_cov", torch.eye(self.z_dim))
        self._code_sums: tuple[int, Tensor, Tensor] | None = None  # (n, Σz, Σzzᵀ) of this epoch, float64
        self._resumed_mid_epoch = False

    # ---- the code ------------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """(B, z_dim) codes of integer images: the features a linear probe reads."""
        return self.encoder(self.scale(x))

    def decode(self, z: Tensor) -> Tensor:
        """(B, C, H, W) float images on the 0 … levels-1 scale (not rounded: pictures show what is decoded)."""
        return ((self.decoder(z) + 1) * ((self.levels - 1) / 2)).clamp(0, self.levels - 1)

    def code_prior(self) -> tuple[Tensor, Tensor]:
        """Mean (z_dim,) and lower Cholesky factor (z_dim, z_dim) of the Gaussian fitted to the training codes."""
        # A small jitter relative to the codes' scale: collapsed code directions would make Σ singular.
        jitter = 1e-5 * self.code_cov.diagonal().mean().clamp_min(1e-8)
        eye = torch.eye(self.z_dim, device=self.code_cov.device)
        scale, info = torch.linalg.cholesky_ex(self.code_cov + jitter * eye)
        if info.item() != 0:
            scale = torch.diag(self.code_cov.diagonal().clamp_min(1e-8).sqrt())
        return self.code_mean, scale

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Decode ``z ~ N(μ, Σ)`` with μ, Σ the mean and covariance of the codes of the latest training epoch
        (as the batches went by; under DDP each rank fits the codes it saw), rounded to the nearest level.

        A plain autoencoder puts no distribution on its codes, so this Gaussian is the simplest stand-in; where
        the codes are far from Gaussian, decoded draws land off the data and look it.
        """
        mean, scale = self.code_prior()
        z = mean + torch.randn(n, self.z_dim, device=mean.device) @ scale.T  # (n, z_dim)
        return self.decode(z).round().long()

    def _record_codes(self, z: Tensor) -> None:
        z = z.detach().double()
        if self._code_sums is None:
            self._code_sums = (0, z.new_zeros(self.z_dim), z.new_zeros(self.z_dim, self.z_dim))
        n, s1, s2 = self._code_sums
        n, s1, s2 = n + len(z), s1.to(z.device) + z.sum(0), s2.to(z.device) + z.T @ z  # (sums of a checkpoint: CPU)
        self._code_sums = (n, s1, s2)
        if n > self.z_dim:  # enough codes for a full-rank covariance
            mean = s1 / n
            self.code_mean.copy_(mean)
            self.code_cov.copy_(s2 / n - torch.outer(mean, mean))

    def on_train_epoch_start(self) -> None:
        if not self._resumed_mid_epoch:  # after a mid-epoch resume, go on summing the codes of that epoch
            self._code_sums = None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._resumed_mid_epoch = False  # (Lightning does not always call on_train_epoch_start on such a resume)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainer = self._trainer
        mid_epoch = trainer is not None and (trainer.fit_loop.epoch_loop.batch_progress.current.processed
                                             < trainer.num_training_batches)
        if mid_epoch and self._code_sums is not None:  # the epoch's sums so far, for a resumed run to go on with
            n, s1, s2 = self._code_sums
            checkpoint["code_sums"] = [torch.tensor(n), s1, s2]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "code_sums" in checkpoint:
            n, s1, s2 = checkpoint["code_sums"]
            self._code_sums, self._resumed_mid_epoch = (int(n), s1, s2), True

    # ---- training and evaluation ---------------------------------------------------------------------------
    def squared_errors(self, x: Tensor, record: bool = False) -> Tensor:
        """(B,) mean over sub-pixels of (g(f(x)) − x)² on the [-1, 1] scale."""
        z = self.encode(x)
        if record:
            self._record_codes(z)
        return (self.decoder(z) - self.scale(x)).pow(2).flatten(1).mean(1)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.squared_errors(x, record=self.training).mean()

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        return {"mse": self.squared_errors(x)}
