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
``genzoo.nn.autoencoder.encoder_decoder``.

``posterior`` chooses q(z|x) (``genzoo.nn.posteriors``): ``diagonal`` (the above), ``iaf`` (an inverse
autoregressive flow of ``flow_steps`` MADE steps of width ``flow_hidden`` fed by a context h of ``flow_context``
numbers from the encoder; Kingma et al. 2016) or ``planar`` (``flow_steps`` planar maps; Rezende & Mohamed 2015).
A flow's KL has no closed form: the ELBO then uses the draw's log q(z|x) − log p(z), and every bound the same
log w = log p(x|z) + log p(z) − log q(z|x), so bits/dim mean the same whichever posterior gave them.

``conditional=true`` is the conditional VAE of Sohn, Lee & Yan (2015, "Learning Structured Output Representation
using Deep Conditional Generative Models"): q(z|x, y) and p(x|z, y) see the class label y through a learned
per-class bias on their first layer (for the MLPs exactly a concatenated one-hot label), the prior stays p(z) =
N(0, I), and every bound is then a bound on log p(x|y), not log p(x): conditional bits/dim (for one joint model
the label is worth at most log2(classes)/dims bits/dim of exact likelihood). ``sample(n, y)`` draws images of the classes y.

``train_samples`` = k > 1 trains on L_k instead of the ELBO (IWAE; β and the warm-up then do not apply).

Left out: learned priors, and conditioning on anything but a class label (labels
for unlabelled data, as in semi-supervised VAEs, would need q(y|x)); the categorical decoder treats neighbouring
levels as unrelated, which the mixture does not.
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
from genzoo.nn.posteriors import (  # noqa: F401  (the Gaussian helpers are part of this module's API)
    POSTERIORS, build_posterior, diagonal_normal_log_prob, gaussian_kl, standard_normal_log_prob)


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
        train_samples: int = 1,
        eval_samples: int = 1000,
        eval_chunk_mb: float = 64.0,
        decoder: Literal["categorical", "bernoulli", "logistic_mixture"] = "categorical",
        components: int = 10,
        posterior: Literal["diagonal", "iaf", "planar"] = "diagonal",
        flow_steps: int = 4,
        flow_hidden: int = 128,
        flow_context: int = 32,
        conditional: bool = False,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        if int(eval_samples) < 1:
            raise GenzooError(f"model.eval_samples={eval_samples} gives no bound: use k = 1 (the ELBO) or more.")
        if float(beta) <= 0 or int(kl_warmup_steps) < 0:
            raise GenzooError(f"model.beta={beta} and model.kl_warmup_steps={kl_warmup_steps} must be positive "
                              "and non-negative: beta=1 and kl_warmup_steps=0 train on the plain ELBO.")
        if int(train_samples) < 1 or (int(train_samples) > 1 and (float(beta) != 1 or int(kl_warmup_steps))):
            raise GenzooError(f"model.train_samples={train_samples} with model.beta={beta} and model.kl_warmup_steps="
                              f"{kl_warmup_steps}: train on the ELBO (train_samples=1, where beta and the warm-up "
                              "apply) or on the importance-weighted bound (train_samples > 1, beta=1, no warm-up).")
        self.check_conditional(conditional)
        self.z_dim, self.beta, self.kl_warmup_steps = int(z_dim), float(beta), int(kl_warmup_steps)
        self.train_samples = int(train_samples)
        self.eval_samples, self.eval_chunk_mb = int(eval_samples), float(eval_chunk_mb)
        self.conditional = bool(conditional)
        options = {"components": components} if decoder == "logistic_mixture" else {}
        self.distribution = output_distribution(decoder, self.shape[0], self.levels, "model.decoder", **options)
        self.q = build_posterior(posterior, self.z_dim, int(flow_steps), int(flow_hidden), int(flow_context))
        self.encoder, self.decoder = build_network(
            encoder_decoder, net, shape=self.shape, z_dim=self.z_dim, encoder_out=self.q.features,
            decoder_out_channels=self.distribution.params, num_classes=self.num_classes if conditional else 0,
        )
        self._terms: tuple[Tensor, Tensor] | None = None  # the last training batch's (recon, KL) in nats

    # ---- the two distributions -----------------------------------------------------------------------------
    def labels(self, y: Tensor | None) -> Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise GenzooError("This VAE is conditional (model.conditional=true): give the class labels y.")
        return y

    def posterior_features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, q.features): what the encoder gives the posterior for integer images x (and labels y)."""
        return self.encoder(self.scale(x), self.labels(y))

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance, each (B, z_dim), of q(z|x) for integer images x (of the flow's z₀ for a flow)."""
        return self.q.base(self.posterior_features(x, y))

    def decoder_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """(N, P, H, W): the parameters of p(x|z) at every pixel (``self.distribution``'s; logits for the
        categorical and the Bernoulli)."""
        return self.decoder(z, self.labels(y))

    def log_px_given_z(self, logits: Tensor, x: Tensor) -> Tensor:
        """(N,) log p(x|z) summed over sub-pixels; ``x`` (N, C, H, W) integers matching the N decoded codes."""
        return self.distribution.log_prob(logits, x)

    # ---- the bounds ----------------------------------------------------------------------------------------
    def elbo_terms(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B,) one-draw estimate of E_q[log p(x|z)] and (B,) KL(q(z|x) ‖ p(z)) in nats: in closed form for the
        diagonal Gaussian, log q(z|x) − log p(z) at the same draw for a flow."""
        features = self.posterior_features(x, y)
        z, log_q = self.q.draw(features, 1)  # (1, B, z_dim), (1, B)
        kl = self.q.kl(features, log_q - standard_normal_log_prob(z))
        return self.log_px_given_z(self.decoder_logits(z[0], y), x), kl

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        recon, kl = self.elbo_terms(x, y)
        return recon - kl

    def samples_per_pass(self, batch: int) -> int:
        """How many draws per image to decode at once so one pass's logits take about ``eval_chunk_mb``."""
        per_image = 4 * math.prod(self.shape[1:]) * self.distribution.params
        return max(1, int(self.eval_chunk_mb * 2**20 // (batch * per_image)))

    def _bounds(self, x: Tensor, k: int, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B,) L_k(x), and the ELBO's two terms estimated from the same k draws: (B,) E_q[log p(x|z)] and (B,) the
        KL (in closed form where there is one)."""
        features = self.posterior_features(x, y)
        log_sum_w = torch.full((len(x),), -math.inf, device=x.device)
        recon_sum = torch.zeros(len(x), device=x.device)
        log_ratio_sum = torch.zeros(len(x), device=x.device)  # Σ_s log q(z_s|x) − log p(z_s)
        step = self.samples_per_pass(len(x))
        for start in range(0, k, step):
            s = min(step, k - start)
            z, log_q = self.q.draw(features, s)  # (s, B, z_dim), (s, B)
            x_rep = x.expand(s, *x.shape).reshape(s * len(x), *x.shape[1:])
            y_rep = None if y is None else y.expand(s, *y.shape).reshape(-1)
            log_px = self.log_px_given_z(self.decoder_logits(z.flatten(0, 1), y_rep), x_rep).view(s, len(x))
            log_pz = standard_normal_log_prob(z)  # (s, B)
            log_w = log_px + log_pz - log_q  # (s, B)
            log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, dim=0))
            recon_sum = recon_sum + log_px.sum(0)
            log_ratio_sum = log_ratio_sum + (log_q - log_pz).sum(0)
        return log_sum_w - math.log(k), recon_sum / k, self.q.kl(features, (log_ratio_sum / k)[None])

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, k: int | None = None) -> Tensor:
        """(B,) one draw of the importance-weighted bound L_k(x) (k = 1: the ELBO; default ``eval_samples``); of
        L_k(x|y) when conditional.

        A lower bound in expectation only: exp of one draw is an unbiased estimate of p(x), so a draw can exceed
        log p(x).
        """
        k = self.eval_samples if k is None else int(k)
        if k < 1:
            raise GenzooError(f"k={k} gives no bound: use k = 1 (the ELBO) or more.")
        return self._bounds(x, k, y)[0]

    # ---- training and evaluation ---------------------------------------------------------------------------
    def kl_weight(self) -> float:
        ramp = min(1.0, (self.global_step + 1) / self.kl_warmup_steps) if self.kl_warmup_steps else 1.0
        return self.beta * ramp

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """−E_q[log p(x|z)] + β_t·KL in bits/dim, averaged over the batch (−ELBO when β_t = 1); with
        ``train_samples`` = k > 1, −L_k, the IWAE objective of Burda et al. (2016)."""
        if self.train_samples > 1:
            bound, recon, kl = self._bounds(x, self.train_samples, self.labels_or_none(y))
            self._terms = (recon.detach(), kl.detach())
            return self.bits_per_dim(bound).mean()
        recon, kl = self.elbo_terms(x, self.labels_or_none(y))
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
            return {"elbo_bpd": self.bits_per_dim(self.elbo(x, self.labels_or_none(y)))}
        iwae, recon, kl = self._bounds(x, self.eval_samples, self.labels_or_none(y))
        return {"elbo_bpd": self.bits_per_dim(recon - kl), f"iwae{self.eval_samples}_bpd": self.bits_per_dim(iwae)}

    # ---- pictures ------------------------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, z_dim) posterior means (a flow's: its z₀ mean pushed through the flow): the features a linear probe
        reads."""
        return self.q.code(self.posterior_features(x, y))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) mean of p(x|z) on the 0 … levels-1 scale (pictures; ``sample`` draws x instead)."""
        return self.distribution.mean(self.decoder_logits(z, y))

    def code_prior(self) -> tuple[Tensor, Tensor]:
        """Mean and Cholesky factor of the prior N(0, I), for pictures that walk the code space."""
        return torch.zeros(self.z_dim, device=self.device), torch.eye(self.z_dim, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """z ~ N(0, I), then every sub-pixel drawn from p(x|z) (p(x|z, y) when conditional; y (n,) labels, drawn
        uniformly when not given): noisy next to the decoded means of ``decode``."""
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        z = torch.randn(n, self.z_dim, device=self.device)
        return self.distribution.sample(self.decoder_logits(z, y if self.conditional else None))
