"""Approximate posteriors q(z|x) for the VAE: small modules fed by the encoder, each giving reparameterised draws
and their exact log density, so the ELBO and the importance-weighted bound use any of them alike:

    log w = log p(x|z) + log p(z) − log q(z|x),    z ~ q(z|x).

A posterior asks the encoder for ``features`` numbers per image and maps those ``(B, F)`` features to
``draw(features, s) -> (z (s, B, D), log q(z|x) (s, B))``, to ``code(features) -> (B, D)`` (a deterministic code for
pictures and probes) and to ``kl(features, log_ratio) -> (B,)``, the KL term of the ELBO: the Monte Carlo estimate
mean_s [log q(z_s|x) − log p(z_s)] from the draws' ``log_ratio`` (s, B) unless a closed form exists.

* ``DiagonalGaussian`` (Kingma & Welling 2014): features (μ, log σ²); z = μ + σ ⊙ ε, ε ~ N(0, I);
  KL(q ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) in closed form.
* ``InverseAutoregressiveFlow`` (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016, "Improved
  Variational Inference with Inverse Autoregressive Flow"): features (μ₀, log σ₀², h); z₀ = μ₀ + σ₀ ⊙ ε, then K
  steps, each a MADE (Germain et al. 2015) fed by z and the context h,

      [m, s] = MADE_k(z_{k−1}, h),   σ_k = sigmoid(s),   z_k = σ_k ⊙ z_{k−1} + (1 − σ_k) ⊙ m_k,

  the paper's numerically stable gated update (eq. 10–11). m_{k,i}, s_{k,i} depend on z_{k−1,<i} only, so the
  Jacobian ∂z_k/∂z_{k−1} is lower triangular with diagonal σ_k, and

      log q(z_K|x) = −Σ_i (½ ε_i² + ½ log σ₀,i² + ½ log 2π) − Σ_k Σ_i log σ_{k,i}.

  The variable order is reversed between steps (a permutation: |det| = 1), so every variable comes first in some
  step. The gate's bias starts at ``forget_bias`` (σ ≈ 0.88): each step starts near the identity, as the paper asks.
* ``PlanarFlow`` (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", eq. 10–12 and appendix
  A.1): features (μ₀, log σ₀², and u_k, w_k, b_k for every step, amortised: computed from x as in the paper), then
  K steps f(z) = z + û h(wᵀz + b) with h = tanh, whose Jacobian I + û ψ(z)ᵀ has

      log |det ∂f/∂z| = log |1 + ûᵀ ψ(z)|,   ψ(z) = h'(wᵀz + b) w,

  and û = u + (m(wᵀu) − wᵀu) w/‖w‖², m(a) = −1 + softplus(a), so wᵀû = m(wᵀu) > −1 and f is invertible.

Left out: IAF's ResNet/convolutional context and its hierarchical latents (the CIFAR-10 model of the paper), the
data-dependent initialisation, and the radial flow of Rezende & Mohamed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def diagonal_normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B,) KL(N(μ, diag e^logvar) ‖ N(0, I)) in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


class DiagonalGaussian(nn.Module):
    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.features = 2 * z_dim

    def base(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance, each (B, z_dim), of the Gaussian the flows start from."""
        mu, logvar = features[:, : 2 * self.z_dim].chunk(2, dim=1)
        return mu, logvar

    def draw(self, features: Tensor, s: int) -> tuple[Tensor, Tensor]:
        mu, logvar = self.base(features)
        z = mu + torch.randn(s, *mu.shape, device=mu.device) * torch.exp(0.5 * logvar)  # (s, B, z_dim)
        return z, diagonal_normal_log_prob(z, mu, logvar)

    def code(self, features: Tensor) -> Tensor:
        return self.base(features)[0]

    def kl(self, features: Tensor, log_ratio: Tensor) -> Tensor:
        return gaussian_kl(*self.base(features))


class Flow(DiagonalGaussian, ABC):
    """A diagonal Gaussian z₀ pushed through ``steps``: log q(z_K) = log q(z₀) − Σ_k log |det ∂z_k/∂z_{k−1}|."""

    @abstractmethod
    def transform(self, z: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """(z_K, Σ_k log|det J_k|) for z₀ (..., B, z_dim); the log-determinants are (..., B)."""

    def draw(self, features: Tensor, s: int) -> tuple[Tensor, Tensor]:
        mu, logvar = self.base(features)
        eps = torch.randn(s, *mu.shape, device=mu.device)  # (s, B, z_dim)
        z, log_det = self.transform(mu + eps * torch.exp(0.5 * logvar), features)
        # log N(z₀; μ, σ²) from ε: the same number as diagonal_normal_log_prob, without dividing by σ
        log_q0 = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
        return z, log_q0 - log_det

    def code(self, features: Tensor) -> Tensor:
        return self.transform(self.base(features)[0], features)[0]

    def kl(self, features: Tensor, log_ratio: Tensor) -> Tensor:
        return log_ratio.mean(0)  # no closed form once the Gaussian is bent


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` (out, in)."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One MADE step z ↦ σ ⊙ z + (1 − σ) ⊙ m, with output i seeing inputs < i (in the order given) and h.

    MADE degrees: input i has degree i (1 … D), hidden units degrees cycling through 1 … D−1; a hidden unit sees
    inputs of degree ≤ its own, output i sees hidden units of degree < i. So output 1 sees h alone.
    """

    def __init__(self, z_dim: int, context: int, hidden: int, forget_bias: float = 2.0):
        super().__init__()
        inputs = torch.arange(1, z_dim + 1)
        hidden_degrees = torch.arange(hidden) % max(1, z_dim - 1) + 1
        self.first = MaskedLinear(hidden_degrees[:, None] >= inputs[None, :])  # (hidden, D)
        self.middle = MaskedLinear(hidden_degrees[:, None] >= hidden_degrees[None, :])  # (hidden, hidden)
        self.out = MaskedLinear((inputs[:, None] > hidden_degrees[None, :]).repeat(2, 1))  # (2D, hidden): m, s
        self.context = nn.Linear(context, hidden)
        with torch.no_grad():
            self.out.bias[z_dim:] = forget_bias

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., B, D), h (B, context) → (z', log|det ∂z'/∂z| (..., B))."""
        a = F.elu(self.first(z) + self.context(h))
        m, s = self.out(F.elu(self.middle(a))).chunk(2, dim=-1)
        sigma = torch.sigmoid(s)
        return sigma * z + (1 - sigma) * m, F.logsigmoid(s).sum(-1)


class InverseAutoregressiveFlow(Flow):
    def __init__(self, z_dim: int, steps: int = 4, hidden: int = 128, context: int = 32):
        super().__init__(z_dim)
        self.context = context
        self.features = 2 * z_dim + context
        self.steps = nn.ModuleList(IAFStep(z_dim, context, hidden) for _ in range(steps))

    def transform(self, z: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        h = features[:, 2 * self.z_dim:]  # (B, context)
        log_det = torch.zeros(z.shape[:-1], device=z.device)
        for k, step in enumerate(self.steps):
            z, step_log_det = step(z.flip(-1) if k > 0 else z, h)  # reversed order from the second step on
            log_det = log_det + step_log_det
        return z, log_det


def planar_step(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """z (..., B, D); u, w (B, D); b (B,) → (f(z), log|det ∂f/∂z| (..., B)), with û so that wᵀû ≥ −1."""
    wu = (w * u).sum(-1, keepdim=True)  # (B, 1)
    w_dot_u_hat = F.softplus(wu) - 1  # m(wᵀu) = wᵀû > −1
    u_hat = u + (w_dot_u_hat - wu) * w / w.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
    t = torch.tanh((z * w).sum(-1) + b)  # (..., B)
    # 1 + ûᵀψ = 1 + h'(a)·wᵀû with h' = 1 − tanh² ∈ (0, 1]: positive whenever wᵀû > −1
    log_det = torch.log1p((1 - t.pow(2)) * w_dot_u_hat.squeeze(-1))
    return z + u_hat * t.unsqueeze(-1), log_det


class PlanarFlow(Flow):
    def __init__(self, z_dim: int, steps: int = 4):
        super().__init__(z_dim)
        self.num_steps = steps
        self.features = 2 * z_dim + steps * (2 * z_dim + 1)

    def transform(self, z: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        params = features[:, 2 * self.z_dim:].view(len(features), self.num_steps, 2 * self.z_dim + 1)
        log_det = torch.zeros(z.shape[:-1], device=z.device)
        for k in range(self.num_steps):
            u, w, b = params[:, k].split([self.z_dim, self.z_dim, 1], dim=-1)  # (B, D), (B, D), (B, 1)
            z, step_log_det = planar_step(z, u, w, b.squeeze(-1))
            log_det = log_det + step_log_det
        return z, log_det


POSTERIORS = ("diagonal", "iaf", "planar")


def build_posterior(name: str, z_dim: int, steps: int, hidden: int, context: int) -> DiagonalGaussian:
    """The posterior ``model.posterior`` names; ``steps`` counts flow steps, ``hidden`` and ``context`` are the IAF's
    MADE width and the size of h (the planar flow and the diagonal Gaussian ignore what they do not use)."""
    if name == "diagonal":
        return DiagonalGaussian(z_dim)
    if name == "iaf":
        return InverseAutoregressiveFlow(z_dim, steps, hidden, context)
    if name == "planar":
        return PlanarFlow(z_dim, steps)
    raise GenzooError(f"model.posterior={name!r} is unknown: use one of {', '.join(map(repr, POSTERIORS))}.")
