"""Autoencoder: learn a code ``z = f(x)`` smaller than ``x`` without labels, by reconstruction,

    min_{f, g}  E_x ‖g(f(x)) − x‖²,

with ``x`` scaled to [-1, 1], so that the encoder ``f`` can be reused as features for a small labelled set (the
``LinearProbe`` callback measures that). Encoder and decoder are ``genzoo.nn.autoencoder``'s networks, shared with
the VAE; ``model.net.arch=conv`` (the default) takes 8×8, 28×28, 32×32 and 64×64 images, ``model.net.arch=mlp``
any shape.

It has no likelihood (``likelihood = None``) and, being no density model, no sampler of its own: ``sample``
decodes codes drawn from a full-covariance Gaussian fitted to the codes of the training images (see
``sample``). Left out: denoising, sparsity or contractive penalties; the code is deterministic and unregularised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.models.base import GenerativeModel
from genzoo.nn import build_network
from genzoo.nn.autoencoder import encoder_decoder
from genzoo.nn.modes import evaluating

# Training images whose codes the sampling Gaussian is fitted to: plenty for its mean and covariance.
PRIOR_IMAGES = 10_000


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
            decoder_out_channels=self.shape[0], num_classes=0,
        )
        # The Gaussian that `sample` draws codes from; N(0, I) until it is fitted to the training codes.
        self.register_buffer("code_mean", torch.zeros(self.z_dim))
        self.register_buffer("code_cov", torch.eye(self.z_dim))
        self._fitted_at: int | None = None  # the training step of the weights the Gaussian was fitted with

    # ---- the code ------------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """(B, z_dim) codes of integer images: the features a linear probe reads."""
        return self.encoder(self.scale(x))

    def decode(self, z: Tensor) -> Tensor:
        """(B, C, H, W) float images on the 0 … levels-1 scale (not rounded: pictures show what is decoded)."""
        return ((self.decoder(z) + 1) * ((self.levels - 1) / 2)).clamp(0, self.levels - 1)

    def code_prior(self) -> tuple[Tensor, Tensor]:
        """Mean (z_dim,) and lower Cholesky factor (z_dim, z_dim) of the Gaussian fitted to the training codes."""
        self.fit_code_prior()
        # A small jitter relative to the codes' scale: collapsed code directions would make Σ singular.
        jitter = 1e-5 * self.code_cov.diagonal().mean().clamp_min(1e-8)
        eye = torch.eye(self.z_dim, device=self.code_cov.device)
        scale, info = torch.linalg.cholesky_ex(self.code_cov + jitter * eye)
        if info.item() != 0:
            scale = torch.diag(self.code_cov.diagonal().clamp_min(1e-8).sqrt())
        return self.code_mean, scale

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Decode ``z ~ N(μ, Σ)`` with μ, Σ the mean and covariance of the codes of (up to ``PRIOR_IMAGES``)
        training images under the current weights, rounded to the nearest level.

        A plain autoencoder puts no distribution on its codes, so this Gaussian is the simplest stand-in; where
        the codes are far from Gaussian, decoded draws land off the data and look it.
        """
        mean, scale = self.code_prior()
        z = mean + torch.randn(n, self.z_dim, device=mean.device) @ scale.T  # (n, z_dim)
        return self.decode(z).round().long()

    def fit_code_prior(self) -> None:
        """While fitting, refit the Gaussian to the training codes whenever the weights have changed since.

        A pass of its own (evaluation mode, a fixed set of images) rather than sums gathered as the batches go
        by: it sees the codes of the weights it samples with, and a checkpoint holds it whole (the buffers), so a
        run resumed mid-epoch needs nothing more. Outside a fit (testing, a loaded checkpoint) the buffers are
        used as saved; under DDP every rank fits the same images, so they agree without a collective."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit" or self._fitted_at == trainer.global_step:
            return
        splits = getattr(trainer.datamodule, "splits", None) or {}
        if "train" not in splits:
            return
        images = splits["train"].images[:PRIOR_IMAGES]
        with evaluating(self):
            z = torch.cat([self.encode(chunk.to(self.device)) for chunk in images.split(1024)]).double()
        if len(z) > self.z_dim:  # enough codes for a full-rank covariance
            mean = z.mean(0)
            self.code_mean.copy_(mean)
            self.code_cov.copy_((z.T @ z) / len(z) - torch.outer(mean, mean))
        self._fitted_at = trainer.global_step

    def on_train_epoch_end(self) -> None:
        self.fit_code_prior()  # before the epoch's checkpoint is written, so it holds the Gaussian of its weights

    # ---- training and evaluation ---------------------------------------------------------------------------
    def squared_errors(self, x: Tensor) -> Tensor:
        """(B,) mean over sub-pixels of (g(f(x)) − x)² on the [-1, 1] scale."""
        return (self.decoder(self.encode(x)) - self.scale(x)).pow(2).flatten(1).mean(1)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.squared_errors(x).mean()

    def loss_limit(self, key: str) -> tuple[float, str] | None:
        # Any reconstruction inside [-1, 1] misses a pixel by at most 2, so by at most 4 squared.
        return 16.0, "4× the worst squared error of any reconstruction inside the pixel range [-1, 1]"

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        return {"mse": self.squared_errors(x)}
