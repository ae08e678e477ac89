"""What the autoregressive models share: an exact likelihood from an output distribution per sub-pixel, and sampling.

    log p(x) = Σ_{i,j} Σ_c log p(x_{c,i,j} | x_{<(i,j)}, x_{<c,(i,j)})

in raster order over pixels and R → G → B within a pixel. A subclass gives ``self.net`` mapping ``(B, C, H, W)``
floats in [-1, 1] (and labels) to the parameters of ``self.distribution`` (``genzoo.nn.distributions``) at every
pixel: ``(B, C, levels, H, W)`` logits whose (c, i, j) entry sees only the past for the categorical of the masked
networks, or ``(B, P, H, W)`` parameters that see only earlier pixels for a distribution that links a pixel's
channels itself (PixelCNN++'s mixture; the network says so with ``whole_pixels = True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel
from genzoo.nn.distributions import Categorical, OutputDistribution
from genzoo.nn.modes import evaluating


class AutoregressiveModel(GenerativeModel):
    likelihood = "exact"

    def __init__(self, *args, conditional: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_conditional(conditional)
        self.conditional = bool(conditional)
        self.distribution: OutputDistribution = Categorical(self.shape[0], self.levels)

    def class_labels(self, y: Tensor | None) -> Tensor | None:
        return y if self.conditional else None

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The network's output for integer images ``x``: the parameters of ``self.distribution`` at every pixel
        ((B, C, levels, H, W) logits for the categorical)."""
        return self.net(self.scale(x), self.class_labels(y))

    def log_likelihood(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.distribution.log_prob(self.logits(x, y), x)

    def level_log_probs(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, levels, H, W): log p(x_{c,i,j} = v | everything before it) for every level v, from images on the
        network's [-1, 1] scale (floats, so the causality tests can differentiate through every path)."""
        return self.distribution.level_log_probs(self.net(x, self.class_labels(y)), x)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, fast: bool = True) -> Tensor:
        """(n, C, H, W) samples in evaluation mode (no dropout), drawn with the global torch RNG.

        ``fast``: use the network's cached ``generate`` where it has one (PixelCNN, Gated PixelCNN, PixelCNN++
        and the PixelRNNs do). Both paths draw every sub-pixel from the one uniform ``Draws`` gives it, whatever order
        they visit the sub-pixels in, so with the same seed they give the same samples up to rare flips from
        float rounding.
        """
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        with evaluating(self):
            if fast and hasattr(self.net, "generate"):
                x = self.net.generate(n, self.class_labels(y), Draws, self.scale, self.shape)
            else:
                x = self.sample_naive(n, y)
        if bool((x >= self.levels).any()):  # one look at the host, after the whole loop
            raise GenzooError("The network gave NaN or infinite logits while sampling, so the samples are "
                              "meaningless: check the checkpoint's weights (a run that diverged) before sampling.")
        return x

    @torch.no_grad()
    def sample_naive(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """Pixel by pixel, channel by channel: one full network pass per sub-pixel, in the current mode.

        ``steps``: stop after that many sub-pixels (the rest stay 0), so a benchmark can time a prefix.
        """
        c, h, w = self.shape
        x = torch.zeros(n, c, h, w, dtype=torch.long, device=self.device)
        draws = Draws(n, self.shape, self.device)
        positions = torch.arange(h * w, device=self.device)
        order = ((i, j, k) for i in range(h) for j in range(w) for k in range(c))
        whole_pixels = getattr(self.net, "whole_pixels", False)  # one pass per pixel is enough
        for _, (i, j, k) in zip(range(c * h * w if steps is None else steps), order):
            if k == 0 or not whole_pixels:
                params = self.logits(x, y)[..., i, j].flatten(1)  # (n, P): this pixel's parameters
            cdf = self.distribution.cdf(params[:, None], k, x[:, None, :k, i, j])  # (n, 1, levels)
            x[:, k, i, j] = draws.invert(cdf, k, positions[i * w + j : i * w + j + 1])[:, 0]
        return x


class Draws:
    """The draws of one batch of samples: one uniform u ~ U(0, 1] per sub-pixel, drawn up front, and the value
    at sub-pixel (k, p) is the inverse of the softmax's CDF at u:

        x = min {v : F(v) ≥ u · F(levels - 1)},    F(v) = Σ_{v' ≤ v} softmax(logits)_{v'},

    a value with zero probability can never be drawn (u > 0), and scaling u by the sum F(levels - 1), which
    rounding leaves a little off 1, keeps x in range. Non-finite logits (NaN, +inf, or all -inf) give x = levels,
    out of range on purpose: the samplers carry on without looking at the host, and ``sample`` reports it once.

    The same holds for any output distribution's CDF (``invert``): the categorical's is the cumulative softmax.

    A sampler makes one per batch, ``Draws(n, shape, device)`` (its first and only use of the RNG), and calls it
    with the logits of any set of positions at once. The value at a sub-pixel is a function of its own logits and
    uniform alone, so samplers that visit the sub-pixels in different orders or groupings (the naive one in raster
    order, the cached PixelCNN a diagonal wavefront at a time) give the same samples from the same seed. Logits
    are read in float32 whatever the network's precision. Nothing syncs with the host, so a network may record
    the draws into a CUDA graph (``capturable``; see ``genzoo.nn.fast_pixelcnn``).
    """

    capturable = True

    def __init__(self, n: int, shape: tuple[int, int, int], device: torch.device | str):
        c, h, w = shape
        self.u = 1.0 - torch.rand(n, c, h * w, device=device)  # (n, C, H·W) in (0, 1]

    def __call__(self, logits: Tensor, k: int, positions: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, P) values of sub-pixels (k, positions) from their (n, P, levels) categorical logits; ``positions``
        (P,) are flat pixel indices i·W + j. ``u``: their uniforms, ``self.u[:, k, positions]``, where the caller
        has them at hand without a gather."""
        return self.invert(Categorical.logits_cdf(logits), k, positions, u)

    def invert(self, cdf: Tensor, k: int, positions: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, P) values of sub-pixels (k, positions) from their (n, P, levels) cumulative probabilities, any
        output distribution's ``cdf``."""
        u = self.u[:, k].index_select(1, positions) if u is None else u  # (n, P)
        return torch.searchsorted(cdf, u.unsqueeze(-1) * cdf[..., -1:]).squeeze(-1)
