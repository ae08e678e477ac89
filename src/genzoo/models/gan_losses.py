"""The two players' losses of a GAN, written from D's logits l = logit D(·) so they stay finite where D saturates.

With D(x) = σ(l(x)), log σ(l) = -softplus(-l) and log(1 - σ(l)) = -softplus(l). Goodfellow et al. (2014) play

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

Each loss is a pair: ``discriminator(real_logits, fake_logits, real_target)`` (minimised by D; ``real_target`` < 1
is one-sided label smoothing, Salimans et al. 2016) and ``generator(fake_logits)`` (minimised by G). To add a loss
(hinge, WGAN-GP), subclass ``GANLoss`` and register it in ``LOSSES``; a gradient penalty needs D and its inputs, so
WGAN-GP would add a ``penalty(discriminator, real, fake)`` term that ``DCGAN.discriminator_step`` adds to D's loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError


class GANLoss(ABC):
    def discriminator(self, real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
        """Binary cross-entropy of D, the negated value of the game (shared by both losses below):

            L_D = -E_x[t·log D(x) + (1 - t)·log(1 - D(x))] - E_z[log(1 - D(G(z)))]
                = E_x[t·softplus(-l_real) + (1 - t)·softplus(l_real)] + E_z[softplus(l_fake)],

        with t = ``real_target`` (1 for the plain game).
        """
        real = F.binary_cross_entropy_with_logits(real_logits, real_logits.new_full(real_logits.shape, real_target))
        fake = F.softplus(fake_logits).mean()
        return real + fake

    @abstractmethod
    def generator(self, fake_logits: Tensor) -> Tensor:
        """The generator's loss from D's logits on fakes; each game defines its own."""


class Minimax(GANLoss):
    """G minimises the game itself (Goodfellow et al. 2014, eq. 1), the saturating loss:

        L_G = E_z[log(1 - D(G(z)))] = -E_z[softplus(l_fake)],     ∂L_G/∂l_fake = -σ(l_fake)/B,

    which vanishes when D confidently rejects the fakes (D(G(z)) → 0), as it does early in training.
    """

    def generator(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean()


class NonSaturating(GANLoss):
    """G maximises log D(G(z)) instead (Goodfellow et al. 2014, section 3), same fixed point, strong early gradient:

        L_G = -E_z[log D(G(z))] = E_z[softplus(-l_fake)],     ∂L_G/∂l_fake = -(1 - σ(l_fake))/B → -1/B as D → 0.
    """

    def generator(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


LOSSES: dict[str, type[GANLoss]] = {"minimax": Minimax, "non_saturating": NonSaturating}


def gan_loss(name: str) -> GANLoss:
    if name not in LOSSES:
        raise GenzooError(f"model.loss={name!r} is not a GAN loss genzoo knows: use one of {', '.join(LOSSES)}.")
    return LOSSES[name]()
