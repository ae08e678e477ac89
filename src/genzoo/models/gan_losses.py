"""GAN objectives: the two players' losses from D's outputs, and the penalties that need D itself and its inputs.

**Logistic games** (D(x) = σ(l(x)), written from the logit l so they stay finite where D saturates:
log σ(l) = -softplus(-l), log(1 - σ(l)) = -softplus(l)). Goodfellow et al. (2014) play

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))];

D descends the cross-entropy (``real_target`` < 1 is one-sided label smoothing, Salimans et al. 2016); G descends
``minimax`` E_z[log(1 - D(G(z)))] itself or the ``non_saturating`` -E_z[log D(G(z))].

**Critics** (D's output is a real number, no probability):

* ``hinge`` (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018 with spectral norm):
  L_D = E_x[max(0, 1 - D(x))] + E_z[max(0, 1 + D(G(z)))],   L_G = -E_z[D(G(z))].
* ``wgan_gp`` (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1): the Kantorovich-Rubinstein
  dual, L_D = E_z[D(G(z))] - E_x[D(x)] + λ·GP, L_G = -E_z[D(G(z))]; for a 1-Lipschitz D,
  Ŵ = E_x[D(x)] - E_z[D(G(z))] estimates the Wasserstein-1 distance between data and model.

**Penalties**, which any objective may add to L_D (``gradient_penalty``, ``r1_penalty``):

* gradient penalty (Gulrajani et al. 2017, eq. 3), on x̂ = εx + (1-ε)x̃ with ε ~ U[0, 1] per image:
  GP = λ·E_x̂[(‖∇_x̂ D(x̂)‖₂ - 1)²], λ = 10 in the paper;
* R1 (Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do actually Converge?", eq. 9), on the
  real images only: R1 = γ/2·E_x[‖∇_x D(x)‖₂²], with D's logit for the logistic games.

Both differentiate D with respect to its inputs with ``create_graph=True``, so the backward of L_D is a double
backward through D. Left out: weight clipping (the original WGAN), the drift term of Karras et al. 2018, lazy
(every-k-steps) regularisation, and the one-sided penalty variant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError


class GANObjective(ABC):
    probabilities = False  # D's output is the logit of a probability (then d_real/d_fake are logged as σ(l))
    gradient_penalty = 0.0  # the λ this objective brings with it when the config leaves model.gradient_penalty null
    # (limit, why) on either player's loss: past it the run has diverged (see GenerativeModel.check_loss)
    limit = (1e4, "10⁴, where the critic's outputs are beyond ±10⁴")

    @abstractmethod
    def discriminator(self, real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
        """D's loss from its outputs (B,) on real and on generated images."""

    @abstractmethod
    def generator(self, fake: Tensor) -> Tensor:
        """G's loss from D's outputs (B,) on generated images."""


class Logistic(GANObjective):
    probabilities = True
    limit = (100.0, "100 nats, where D's logits are beyond ±100 and neither player can learn")

    def discriminator(self, real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
        """Binary cross-entropy of D, the negated value of the game:

            L_D = E_x[t·softplus(-l_real) + (1 - t)·softplus(l_real)] + E_z[softplus(l_fake)],

        with t = ``real_target`` (1 for the plain game).
        """
        real_loss = F.binary_cross_entropy_with_logits(real, real.new_full(real.shape, real_target))
        return real_loss + F.softplus(fake).mean()


class Minimax(Logistic):
    """L_G = E_z[log(1 - D(G(z)))] = -E_z[softplus(l_fake)],  ∂L_G/∂l_fake = -σ(l_fake)/B: it vanishes when D
    confidently rejects the fakes, as it does early in training."""

    def generator(self, fake: Tensor) -> Tensor:
        return -F.softplus(fake).mean()


class NonSaturating(Logistic):
    """L_G = -E_z[log D(G(z))] = E_z[softplus(-l_fake)],  ∂L_G/∂l_fake = -(1 - σ(l_fake))/B → -1/B as D → 0."""

    def generator(self, fake: Tensor) -> Tensor:
        return F.softplus(-fake).mean()


class Hinge(GANObjective):
    def discriminator(self, real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class WassersteinGP(GANObjective):
    gradient_penalty = 10.0

    def discriminator(self, real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
        return fake.mean() - real.mean()  # -Ŵ; the penalty is added by the caller

    def generator(self, fake: Tensor) -> Tensor:
        return -fake.mean()


LOSSES: dict[str, type[GANObjective]] = {"minimax": Minimax, "non_saturating": NonSaturating, "hinge": Hinge,
                                         "wgan_gp": WassersteinGP}


def gan_loss(name: str) -> GANObjective:
    if name not in LOSSES:
        raise GenzooError(f"model.loss={name!r} is not a GAN loss genzoo knows: use one of {', '.join(LOSSES)}.")
    return LOSSES[name]()


def input_gradient(outputs: Tensor, inputs: Tensor) -> Tensor:
    """∇_x of each image's output, (B, C, H, W), kept in the graph so a loss on it can be differentiated again.
    Summing over the batch gives each image's own gradient as long as no image's output depends on another's
    (no batch norm in D)."""
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, weight: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """λ·E[(‖∇D(x̂)‖₂ - 1)²] on random interpolates x̂ = εx + (1-ε)x̃ of paired real and fake images (B, C, H, W)."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    between = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    grad = input_gradient(critic(between), between)
    return weight * (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def r1_penalty(real_outputs: Tensor, real: Tensor, gamma: float) -> Tensor:
    """γ/2·E[‖∇_x D(x)‖₂²] from D's outputs on ``real`` (which must require gradients before D saw them)."""
    grad = input_gradient(real_outputs, real)
    return 0.5 * gamma * grad.flatten(1).square().sum(dim=1).mean()
