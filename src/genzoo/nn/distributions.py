"""Output distributions: from a network's parameters at each pixel to probabilities over the data's levels.

An image has C channels of L levels, 0 … L-1, seen by networks on the scale x̃ = 2x/(L-1) - 1 in [-1, 1]. A
distribution factorises over pixels given its parameters θ_{i,j}, and within a pixel over channels in order:

    log p(x | θ) = Σ_{i,j} Σ_c log p(x_{c,i,j} | θ_{i,j}, x_{<c,i,j}).

Each one says how many parameters a pixel needs (``params``) and gives, for a network output θ of shape
(B, params, H, W):

* ``log_prob(θ, x)``: (B,) the log-probability of integer images x, summed over sub-pixels;
* ``level_log_probs(θ, x̃)``: (B, C, L, H, W), log p(x_c = v | θ, x_{<c}) for every level v, the earlier channels
  read from x̃ (floats, so a test can differentiate through them);
* ``cdf(θ, k, earlier)``: (…, L) the cumulative probabilities of channel k over the levels at a set of pixels,
  θ (…, params) and their drawn channels < k (…, k) integers: what ``genzoo.models.autoregressive.Draws``
  inverts, one uniform per sub-pixel, so every sampler that asks for the same sub-pixel gets the same value;
* ``sample(θ)`` and ``mean(θ)``: all pixels at once, for decoders whose parameters do not depend on x (the VAE).

``Categorical``: a softmax over the L levels per channel (PixelCNN's, van den Oord et al. 2016). ``Bernoulli``: the
two-level case with one logit per channel. ``DiscretizedLogisticMixture``: PixelCNN++'s (Salimans et al. 2017,
eq. 2 and section 2.2), M logistic components shared by a pixel's channels, each channel's mean shifted linearly by
the channels before it. ``output_distribution`` picks one by the name a config gives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError


def scaled(levels: int, x: Tensor) -> Tensor:
    """Integer levels to the networks' [-1, 1] scale (what ``GenerativeModel.scale`` gives every network)."""
    return x.float() * (2.0 / (levels - 1)) - 1.0


def channels_last(params: Tensor) -> Tensor:
    """(B, P, H, W) → (B, H, W, P): a pixel's parameters on the last axis, where ``cdf`` reads them."""
    return params.movedim(1, -1)


class OutputDistribution(ABC):
    """A distribution over a pixel's C channels of L levels given ``params`` numbers per pixel (see the module)."""

    name = ""

    def __init__(self, channels: int, levels: int):
        self.channels, self.levels = int(channels), int(levels)

    @property
    @abstractmethod
    def params(self) -> int:
        """Parameters per pixel: the network's output channels."""

    @abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """(B,) log p(x | θ) of integer images x (B, C, H, W), θ (B, params, H, W)."""

    @abstractmethod
    def level_log_probs(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, L, H, W) log p(x_c = v | θ, x_{<c}) for every level v, x (B, C, H, W) on the [-1, 1] scale."""

    @abstractmethod
    def cdf(self, params: Tensor, k: int, earlier: Tensor | None = None) -> Tensor:
        """(…, L) cumulative probabilities of channel k, θ (…, params), its pixel's channels < k (…, k) integers."""

    def sample(self, params: Tensor) -> Tensor:
        """(B, C, H, W) integers: channel by channel, each sub-pixel by inverting ``cdf`` at its own uniform."""
        theta = channels_last(params)  # (B, H, W, P)
        b, h, w, _ = theta.shape
        x = torch.zeros(b, h, w, self.channels, dtype=torch.long, device=params.device)
        u = 1.0 - torch.rand(b, h, w, self.channels, device=params.device)  # (0, 1]
        for k in range(self.channels):
            cdf = self.cdf(theta, k, x[..., :k])
            x[..., k] = torch.searchsorted(cdf, (u[..., k] * cdf[..., -1]).unsqueeze(-1)).squeeze(-1)
        return x.clamp_(max=self.levels - 1).movedim(-1, 1)

    def mean(self, params: Tensor) -> Tensor:
        """(B, C, H, W) expected level of each channel, on the 0 … L-1 scale, the earlier channels of a pixel set to
        their own (rounded) means: pictures of a decoder, not samples."""
        theta = channels_last(params)
        b, h, w, _ = theta.shape
        earlier = torch.zeros(b, h, w, self.channels, dtype=torch.long, device=params.device)
        means = torch.zeros(b, h, w, self.channels, device=params.device)
        values = torch.arange(self.levels, device=params.device, dtype=torch.float32)
        for k in range(self.channels):
            cdf = self.cdf(theta, k, earlier[..., :k])
            probs = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))
            means[..., k] = (probs * values).sum(-1) / cdf[..., -1]
            earlier[..., k] = means[..., k].round().long()
        return means.movedim(-1, 1)


class Categorical(OutputDistribution):
    """p(x_c = v | θ) = softmax(θ_c)_v with θ_c the L logits of channel c: neighbouring levels are unrelated, and
    channels are independent given θ (a masked network feeds each channel's logits what it may see). Parameters
    per pixel: C·L, laid out as C contiguous groups of L logits, the order masked output layers give."""

    name = "categorical"

    @property
    def params(self) -> int:
        return self.channels * self.levels

    def logits(self, params: Tensor) -> Tensor:
        """(B, C, L, H, W) logits from (B, C·L, H, W) parameters (or logits already in that shape)."""
        b, *_, h, w = params.shape
        return params.reshape(b, self.channels, self.levels, h, w)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_probs = F.log_softmax(self.logits(params), dim=2)  # (B, C, L, H, W)
        return log_probs.gather(2, x.long().unsqueeze(2)).flatten(1).sum(1)

    def level_log_probs(self, params: Tensor, x: Tensor | None = None) -> Tensor:
        return F.log_softmax(self.logits(params), dim=2)

    @staticmethod
    def logits_cdf(logits: Tensor) -> Tensor:
        """(…, L) cumulative softmax of (…, L) logits, in float32 whatever the network's precision."""
        return F.softmax(logits.float(), dim=-1).cumsum(-1)

    def cdf(self, params: Tensor, k: int, earlier: Tensor | None = None) -> Tensor:
        return self.logits_cdf(params.unflatten(-1, (self.channels, self.levels))[..., k, :])

    def sample(self, params: Tensor) -> Tensor:
        probs = F.softmax(self.logits(params).float(), dim=2).movedim(2, -1)  # (B, C, H, W, L)
        return torch.distributions.Categorical(probs=probs).sample()

    def mean(self, params: Tensor) -> Tensor:
        logits = self.logits(params)
        values = torch.arange(self.levels, device=params.device, dtype=logits.dtype).view(1, 1, -1, 1, 1)
        return (F.softmax(logits, dim=2) * values).sum(2)


class Bernoulli(OutputDistribution):
    """Two levels: p(x_c = 1 | θ) = σ(θ_c), one logit per channel (a 2-way softmax with one logit fixed at 0)."""

    name = "bernoulli"

    def __init__(self, channels: int, levels: int = 2):
        if int(levels) != 2:
            raise GenzooError(f"A Bernoulli output models 2 levels, and this data has {levels}: use the "
                              "categorical or logistic_mixture output.")
        super().__init__(channels, levels)

    @property
    def params(self) -> int:
        return self.channels

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params, x.float(), reduction="none").flatten(1).sum(1)

    def level_log_probs(self, params: Tensor, x: Tensor | None = None) -> Tensor:
        return torch.stack([F.logsigmoid(-params), F.logsigmoid(params)], dim=2)

    def cdf(self, params: Tensor, k: int, earlier: Tensor | None = None) -> Tensor:
        p0 = torch.sigmoid(-params[..., k].float())
        return torch.stack([p0, torch.ones_like(p0)], dim=-1)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params)).long()

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


def log_sigmoid_difference(a: Tensor, b: Tensor) -> Tensor:
    """log(σ(a) − σ(b)) for a > b, without cancellation anywhere:

        σ(a) − σ(b) = σ(a) · σ(−b) · (1 − e^{b−a}),

    so the log is −softplus(−a) − softplus(b) + log(−expm1(b − a)). Each term is accurate far in either tail
    (where the plain difference of two sigmoids rounds to 0, and the reference code falls back to the density at
    the bin's centre once it drops below 1e-5) and at tiny bin widths."""
    return -F.softplus(-a) - F.softplus(b) + torch.log(-torch.expm1(b - a))


class DiscretizedLogisticMixture(OutputDistribution):
    """PixelCNN++'s likelihood (Salimans, Karpathy, Chen & Kingma 2017, eq. 2), for any L ≥ 2.

    A pixel picks one of M components, π = softmax(θ_π), for all its channels; given component m, channel c is
    a logistic with scale s_{c,m} and mean

        μ'_{c,m} = μ_{c,m} + Σ_{c' < c} tanh(α_{c,c',m}) · x̃_{c'},

    (for RGB: G's mean moves with R, B's with R and G, section 2.2), discretised to the L bins of width 2/(L-1)
    around the levels' centres x̃_v, with the two outer bins stretched to ±∞:

        P(v) = σ((x̃_v + δ − μ')/s) − σ((x̃_v − δ − μ')/s),   δ = 1/(L-1),
        P(0) = σ((x̃_0 + δ − μ')/s),   P(L-1) = 1 − σ((x̃_{L-1} − δ − μ')/s),

    so the L probabilities sum to 1 exactly. The bin in the middle is computed in logs by
    ``log_sigmoid_difference`` (no cancellation, no fallback needed); log s is clamped at −7 as in the paper's
    code. Given the channels before it, channel k's distribution is a mixture with the components re-weighted by
    how well each explained those channels:

        p(x_k | x_{<k}) = Σ_m w_m P_{k,m}(x_k),   w ∝ π_m Π_{c<k} P_{c,m}(x_c),

    which is what ``cdf`` inverts, so a sampler draws each sub-pixel from its exact conditional with one uniform.

    Parameters per pixel: M·(1 + 2C + C(C-1)/2), laid out as M mixture logits, C·M means, C·M log-scales and
    C(C-1)/2·M coefficients (channel pairs (1,0), (2,0), (2,1), …): 10·M for RGB, 3·M for grey.
    """

    name = "logistic_mixture"
    min_log_scale = -7.0

    def __init__(self, channels: int, levels: int, components: int = 10):
        super().__init__(channels, levels)
        if int(components) < 1:
            raise GenzooError(f"A logistic mixture of components={components} has nothing to mix: use 1 or more.")
        self.components = int(components)
        c = self.channels
        self.pairs = [(k, j) for k in range(c) for j in range(k)]  # (channel, earlier channel)
        self.half_bin = 1.0 / (self.levels - 1)

    @property
    def params(self) -> int:
        c = self.channels
        return self.components * (1 + 2 * c + len(self.pairs))

    def unpack(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(…, P) → log π (…, M), μ (…, C, M), log s (…, C, M), tanh α (…, C(C-1)/2, M)."""
        m, c = self.components, self.channels
        logit_pi, mu, log_s, alpha = theta.float().split([m, c * m, c * m, len(self.pairs) * m], dim=-1)
        shape = theta.shape[:-1]
        return (
            F.log_softmax(logit_pi, dim=-1),
            mu.reshape(*shape, c, m),
            log_s.reshape(*shape, c, m).clamp(min=self.min_log_scale),
            torch.tanh(alpha.reshape(*shape, len(self.pairs), m)),
        )

    def shifted_mean(self, mu: Tensor, alpha: Tensor, k: int, earlier: Tensor) -> Tensor:
        """(…, M) μ'_k from the means (…, C, M), coefficients and the scaled earlier channels (…, ≥k)."""
        mean = mu[..., k, :]
        for p, (channel, before) in enumerate(self.pairs):
            if channel == k:
                mean = mean + alpha[..., p, :] * earlier[..., before, None]
        return mean

    def bin_log_probs(self, value: Tensor, level: Tensor, mean: Tensor, log_s: Tensor) -> Tensor:
        """log P_m(level) per component, (…, M): ``value`` the level's centre x̃ (…, 1) and ``level`` (…, 1) its
        integer, which decides whether the bin is an outer one."""
        inv_s = torch.exp(-log_s)
        upper = (value + self.half_bin - mean) * inv_s
        lower = (value - self.half_bin - mean) * inv_s
        middle = log_sigmoid_difference(upper, lower)
        bottom = -F.softplus(-upper)  # log σ(upper): the bin from −∞
        top = -F.softplus(lower)  # log (1 − σ(lower)): the bin to +∞
        return torch.where(level <= 0, bottom, torch.where(level >= self.levels - 1, top, middle))

    def pixel_log_probs(self, theta: Tensor, values: Tensor, levels: Tensor) -> Tensor:
        """(…, C) log p(x_c | x_{<c}) of one pixel's channels: ``theta`` (…, P), ``values`` (…, C) their centres
        x̃ (floats), ``levels`` (…, C) their integers."""
        log_pi, mu, log_s, alpha = self.unpack(theta)
        joint = log_pi  # (…, M): log π_m + Σ_{c' < c} log P_{c',m}(x_c'), the component weights so far
        out = []
        for k in range(self.channels):
            mean = self.shifted_mean(mu, alpha, k, values)
            lp = self.bin_log_probs(values[..., k, None], levels[..., k, None], mean, log_s[..., k, :])
            new_joint = joint + lp
            out.append(torch.logsumexp(new_joint, -1) - torch.logsumexp(joint, -1))
            joint = new_joint
        return torch.stack(out, dim=-1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """(B,) Σ_{i,j} log Σ_m π_m Π_c P_{c,m}(x_c): the pixel's joint, one log-sum-exp per pixel."""
        theta = channels_last(params)  # (B, H, W, P)
        x = x.long().movedim(1, -1)  # (B, H, W, C)
        values = scaled(self.levels, x)
        log_pi, mu, log_s, alpha = self.unpack(theta)
        joint = log_pi
        for k in range(self.channels):
            mean = self.shifted_mean(mu, alpha, k, values)
            joint = joint + self.bin_log_probs(values[..., k, None], x[..., k, None], mean, log_s[..., k, :])
        return torch.logsumexp(joint, -1).flatten(1).sum(1)

    def weights_and_mean(self, theta: Tensor, k: int, earlier: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Channel k given the pixel's scaled earlier channels (…, ≥k) (their levels rounded from them): the
        component weights log w (…, M), the shifted means μ'_k (…, M) and the log-scales (…, M)."""
        log_pi, mu, log_s, alpha = self.unpack(theta)
        levels = ((earlier + 1) / (2 * self.half_bin)).round().long().clamp(0, self.levels - 1)
        weights = log_pi
        for c in range(k):
            mean = self.shifted_mean(mu, alpha, c, earlier)
            weights = weights + self.bin_log_probs(earlier[..., c, None], levels[..., c, None], mean, log_s[..., c, :])
        return F.log_softmax(weights, dim=-1), self.shifted_mean(mu, alpha, k, earlier), log_s[..., k, :]

    def level_log_probs(self, params: Tensor, x: Tensor) -> Tensor:
        theta, earlier = channels_last(params), x.float().movedim(1, -1)  # (B, H, W, P), (B, H, W, C)
        out = []
        grid = torch.arange(self.levels, device=params.device)
        for k in range(self.channels):
            weights, mean, log_s = self.weights_and_mean(theta, k, earlier)
            log_p = self.bin_log_probs(scaled(self.levels, grid), grid, mean[..., None], log_s[..., None])  # (…, M, L)
            out.append(torch.logsumexp(weights[..., None] + log_p, dim=-2))  # (B, H, W, L)
        return torch.stack(out, dim=1).movedim(-1, 2)  # (B, C, L, H, W)

    def cdf(self, params: Tensor, k: int, earlier: Tensor | None = None) -> Tensor:
        """(…, L) Σ_m w_m σ((x̃_v + δ − μ'_m)/s_m) at the upper edge of each bin, 1 at the last."""
        shape = params.shape[:-1]
        values = torch.zeros(*shape, self.channels, device=params.device)
        if k > 0:
            values[..., :k] = scaled(self.levels, earlier[..., :k])
        weights, mean, log_s = self.weights_and_mean(params, k, values)
        edges = scaled(self.levels, torch.arange(self.levels - 1, device=params.device)) + self.half_bin
        below = torch.sigmoid((edges - mean[..., None]) * torch.exp(-log_s[..., None]))  # (…, M, L-1)
        cdf = (weights.exp()[..., None] * below).sum(-2)
        return torch.cat([cdf, torch.ones_like(cdf[..., :1])], dim=-1)


DISTRIBUTIONS = {d.name: d for d in (Categorical, Bernoulli, DiscretizedLogisticMixture)}


def output_distribution(name: str, channels: int, levels: int, key: str = "model.output", **options) -> OutputDistribution:
    """The distribution a config names; ``categorical`` on two levels is the ``bernoulli`` (one logit instead of
    two, the same family). ``options``: the mixture's ``components``."""
    if name not in DISTRIBUTIONS:
        raise GenzooError(f"{key}={name!r} is not an output distribution: use one of {', '.join(DISTRIBUTIONS)}.")
    if name == "categorical" and int(levels) == 2:
        name = "bernoulli"
    cls = DISTRIBUTIONS[name]
    if cls is DiscretizedLogisticMixture:
        return cls(channels, levels, **options)
    return cls(channels, levels)


__all__ = ["Bernoulli", "Categorical", "DiscretizedLogisticMixture", "OutputDistribution", "log_sigmoid_difference",
           "output_distribution"]
