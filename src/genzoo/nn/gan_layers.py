"""Layers the GAN networks share: spectral normalisation, conditional batch norm, and the discriminator's
normalisation choice.

* Spectral normalisation (Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral Normalization for Generative
  Adversarial Networks"): every weight W is used as W / σ(W), σ(W) its largest singular value, estimated by one
  step of power iteration per forward in training mode,

      v ← Wᵀu / ‖Wᵀu‖,   u ← Wv / ‖Wv‖,   σ(W) ≈ uᵀWv,

  with u, v carried over from the previous forward (a convolution's weight is read as a matrix of shape
  (out, in·k·k)). Each layer is then 1-Lipschitz, and so is D up to its activations. torch's
  ``parametrizations.spectral_norm`` keeps u and v as buffers: under DDP they are broadcast from rank 0 with the
  other buffers, and a checkpoint holds them, so a resumed run goes on with the same estimate.
* Conditional batch norm (de Vries et al. 2017; Dumoulin et al. 2017; the generator of Miyato & Koyama 2018):
  batch norm without its own affine map, followed by a scale and shift chosen by the class,
  γ_y ⊙ (h - μ)/σ + β_y, with γ_y starting at 1 and β_y at 0.
* ``frozen_power_iteration``: a forward that does not advance u, v — for the extra passes of a gradient penalty,
  so a D step moves the estimate as often with a penalty as without (once per forward on real and on fake images).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

Norm = Literal["batch", "layer", "none"]


def spectrally_normalised(module: nn.Module) -> nn.Module:
    """``module`` with spectral normalisation on the weight of every convolution, linear map and embedding inside
    it (the embedding is the projection discriminator's class matrix, normalised as in Miyato & Koyama 2018)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and not parametrize.is_parametrized(m, "weight"):
            parametrizations.spectral_norm(m)
    return module


def power_iterations(module: nn.Module) -> list[nn.Module]:
    """The spectral-norm parametrisations inside ``module`` (each holds its u, v buffers)."""
    return [p for m in module.modules() if parametrize.is_parametrized(m, "weight")
            for p in m.parametrizations.weight if type(p).__name__ == "_SpectralNorm"]


@contextmanager
def frozen_power_iteration(module: nn.Module) -> Iterator[None]:
    """Forwards of ``module`` inside use the current σ(W) estimate without a power-iteration step (the
    parametrisation iterates only in training mode); the rest of the module keeps its mode."""
    norms = [(p, p.training) for p in power_iterations(module)]
    for p, _ in norms:
        p.training = False
    try:
        yield
    finally:
        for p, training in norms:
            p.training = training


def feature_norm(kind: Norm, channels: int) -> nn.Module:
    """Normalisation of D's hidden feature maps. Layer norm is over each image's (C, H, W), as in the critic of
    Gulrajani et al. 2017: unlike batch norm it makes no image's output depend on the others in the batch, which a
    per-sample gradient penalty needs."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ConditionalBatchNorm2d(nn.Module):
    """(B, C, H, W) features [and labels (B,)] → batch-normalised features with a per-class scale and shift;
    with ``num_classes`` = 0 it is plain batch norm with one learned scale and shift."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes > 0:
            self.gamma = nn.Embedding(num_classes, channels)
            self.beta = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gamma.weight)
            nn.init.zeros_(self.beta.weight)

    def forward(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.bn(h)
        if self.num_classes == 0:
            return h
        return self.gamma(y)[:, :, None, None] * h + self.beta(y)[:, :, None, None]

