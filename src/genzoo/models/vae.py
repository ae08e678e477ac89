"""Variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"), with the importance-weighted
bound of Burda, Grosse & Salakhutdinov (2016, "Importance Weighted Autoencoders") for evaluation.

Prior p(z) = N(0, I); encoder q(z|x) = N(μ(x), diag σ²(x)); decoder p(x|z) a **discrete** distribution over the
data's ``levels``, one of ``genzoo.nn.distributions`` (``decoder``): a categorical per sub-pixel (a Bernoulli when
levels = 2), or PixelCNN++'s discretized logistic mixture (``decoder=logistic_mixture``, as the IAF paper's VAEs on
CIFAR-10 use), so bits/dim compare with PixelCNN's on the same data. The marginal p(x) = ∫ p(x|z) p(z) dz is intractable; training maximises the ELBO

    log p(x) ≥ L(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ p(z)),
    KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)                                  (closed form, K&W appendix B),

with one reparameterised draw z = μ + σ ⊙ ε, ε ~ N(0, I), per image. ``beta`` (β-VAE, Higgins et al. 2017) and
``kl_warmup_steps`` (a linear ramp of the KL weight from 0, Sønderby et al. 2016) change only the training loss
−E_q[log p(x|z)] + β_t·KL; every reported number is the plain bound. ``log_likelihood(x, k)`` is the
k-sample importance-weighted bound

    L_k(x) = E_{z_1…z_k ~ q}[ log (1/k) Σ_i p(x, z_i) / q(z_i|x) ],    L_1 = L ≤ L_k ≤ L_{k+1} ≤ log p(x),

evaluated ``samples_per_pass`` draws at a time (a running log-sum-exp), so memory stays flat in k. Logged as
``val/elbo_bpd`` (one draw per image; monitored), ``test/elbo_bpd`` (from the same k = ``eval_samples`` draws as)
``test/iwae{k}_bpd``: upper bounds on the NLL in bits/dim, never the NLL itself.
``model.net.arch=conv`` uses the autoencoder's convolutional networks (8×8, 28×28, 32×32, 64×64);
``model.net.arch=mlp`` the papers' tanh MLPs (any shape); ``model.net`` holds the keyword arguments of
``genzoo.nn.autoencoder.encoder_decoder``. Left out: training on the IWAE objective, and learned or flow priors; the
categorical decoder treats neighbouring levels as unrelated, which the mixture does not.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel
from genzoo.nn import build_network
from genzoo.nn.autoencoder import encoder_decoder
from genzoo.nn.distributions import output_distribution

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B,) KL(N(μ, diag e^logvar) ‖ N(0, I)) in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def diagonal_normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


class VAE(GenerativeModel):
    likelihood = "bound"

    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        z_dim: int = 16,
        net: dict | None = None,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        eval_samples: int = 1000,
        eval_chunk_mb: float = 64.0,
        decoder: Literal["categorical", "bernoulli", "logistic_mixture"] = "categorical",
        components: int = 10,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        if int(eval_samples) < 1:
            raise GenzooError(f"model.eval_samples={eval_samples} gives no bound: use k = 1 (the ELBO) or more.")
        if float(beta) <= 0 or int(kl_warmup_steps) < 0:
            raise GenzooError(f"model.beta={beta} and model.kl_warmup_steps={kl_warmup_steps} must be positive "
                              "and non-negative: beta=1 and kl_warmup_steps=0 train on the plain ELBO.")
        self.z_dim, self.beta, self.kl_warmup_steps = int(z_dim), float(beta), int(kl_warmup_steps)
        self.eval_samples, self.eval_chunk_mb = int(eval_samples), float(eval_chunk_mb)
        options = {"components": components} if decoder == "logistic_mixture" else {}
        self.distribution = output_distribution(decoder, self.shape[0], self.levels, "model.decoder", **options)
        self.encoder, self.decoder = build_network(
            encoder_decoder, net, shape=self.shape, z_dim=self.z_dim, encoder_out=2 * self.z_dim,
            decoder_out_channels=self.distribution.params,
        )
        self._terms: tuple[Tensor, Tensor] | None = None  # the last training batch's (recon, KL) in nats

    # ---- the two distributions -----------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance, each (B, z_dim), of q(z|x) for integer images x."""
        mu, logvar = self.encoder(self.scale(x)).chunk(2, dim=1)
        return mu, logvar

    def decoder_logits(self, z: Tensor) -> Tensor:
        """(N, P, H, W): the parameters of p(x|z) at every pixel (``self.distribution``'s; logits for the
        categorical and the Bernoulli)."""
        return self.decoder(z)

    def log_px_given_z(self, logits: Tensor, x: Tensor) -> Tensor:
        """(N,) log p(x|z) summed over sub-pixels; ``x`` (N, C, H, W) integers matching the N decoded codes."""
        return self.distribution.log_prob(logits, x)

    # ---- the bounds ----------------------------------------------------------------------------------------
    def elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) one-draw estimate of E_q[log p(x|z)] and (B,) closed-form KL(q(z|x) ‖ p(z)), in nats."""
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.log_px_given_z(self.decoder_logits(z), x), gaussian_kl(mu, logvar)

    def elbo(self, x: Tensor) -> Tensor:
        recon, kl = self.elbo_terms(x)
        return recon - kl

    def samples_per_pass(self, batch: int) -> int:
        """How many draws per image to decode at once so one pass's logits take about ``eval_chunk_mb``."""
        per_image = 4 * math.prod(self.shape[1:]) * self.distribution.params
        return max(1, int(self.eval_chunk_mb * 2**20 // (batch * per_image)))

    def _bounds(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(B,) L_k(x) and (B,) the ELBO estimated from the same k draws (its KL in closed form)."""
        mu, logvar = self.posterior(x)
        std = torch.exp(0.5 * logvar)
        log_sum_w = torch.full((len(x),), -math.inf, device=x.device)
        recon_sum = torch.zeros(len(x), device=x.device)
        step = self.samples_per_pass(len(x))
        for start in range(0, k, step):
            s = min(step, k - start)
            z = mu + torch.randn(s, *mu.shape, device=mu.device) * std  # (s, B, z_dim)
            x_rep = x.expand(s, *x.shape).reshape(s * len(x), *x.shape[1:])
            log_px = self.log_px_given_z(self.decoder_logits(z.flatten(0, 1)), x_rep).view(s, len(x))  # (s, B)
            log_w = log_px + standard_normal_log_prob(z) - diagonal_normal_log_prob(z, mu, logvar)  # (s, B)
            log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, dim=0))
            recon_sum = recon_sum + log_px.sum(0)
        return log_sum_w - math.log(k), recon_sum / k - gaussian_kl(mu, logvar)

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, k: int | None = None) -> Tensor:
        """(B,) one draw of the importance-weighted bound L_k(x) (k = 1: the ELBO; default ``eval_samples``).

        A lower bound in expectation only: exp of one draw is an unbiased estimate of p(x), so a draw can exceed
        log p(x).
        """
        k = self.eval_samples if k is None else int(k)
        if k < 1:
            raise GenzooError(f"k={k} gives no bound: use k = 1 (the ELBO) or more.")
        return self._bounds(x, k)[0]

    # ---- training and evaluation ---------------------------------------------------------------------------
    def kl_weight(self) -> float:
        ramp = min(1.0, (self.global_step + 1) / self.kl_warmup_steps) if self.kl_warmup_steps else 1.0
        return self.beta * ramp

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """−E_q[log p(x|z)] + β_t·KL in bits/dim, averaged over the batch (−ELBO when β_t = 1)."""
        recon, kl = self.elbo_terms(x)
        self._terms = (recon.detach(), kl.detach())
        return self.bits_per_dim(recon - self.kl_weight() * kl).mean()

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        recon, kl = self._terms
        # recon_bpd + kl_bpd is −ELBO in bits/dim; a KL near 0 means the decoder ignores z (posterior collapse).
        terms = {"train/recon_bpd": self.bits_per_dim(recon).mean(), "train/kl_bpd": -self.bits_per_dim(kl).mean()}
        self.log_dict(terms, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(batch[0]))
        return loss

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        if stage != "test":  # one draw per image: cheap, unbiased, and what the checkpoint is chosen by
            return {"elbo_bpd": self.bits_per_dim(self.elbo(x))}
        iwae, elbo = self._bounds(x, self.eval_samples)
        return {"elbo_bpd": self.bits_per_dim(elbo), f"iwae{self.eval_samples}_bpd": self.bits_per_dim(iwae)}

    # ---- pictures ------------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """(B, z_dim) posterior means: the features a linear probe reads."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """(B, C, H, W) mean of p(x|z) on the 0 … levels-1 scale (pictures; ``sample`` draws x instead)."""
        return self.distribution.mean(self.decoder_logits(z))

    def code_prior(self) -> tuple[Tensor, Tensor]:
        """Mean and Cholesky factor of the prior N(0, I), for pictures that walk the code space."""
        return torch.zeros(self.z_dim, device=self.device), torch.eye(self.z_dim, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """z ~ N(0, I), then every sub-pixel drawn from p(x|z): noisy next to the decoded means of ``decode``."""
        return self.distribution.sample(self.decoder_logits(torch.randn(n, self.z_dim, device=self.device)))
