"""What the autoregressive models share: an exact likelihood from per-sub-pixel softmaxes, and sampling.

    log p(x) = Σ_{i,j} Σ_c log p(x_{c,i,j} | x_{<(i,j)}, x_{<c,(i,j)})

in raster order over pixels and R → G → B within a pixel; each factor is a softmax over ``levels`` values. A
subclass gives ``self.net`` mapping ``(B, C, H, W)`` floats in [-1, 1] (and labels) to ``(B, C, levels, H, W)``
logits whose (c, i, j) entry sees only the past.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel


class AutoregressiveModel(GenerativeModel):
    likelihood = "exact"

    def __init__(self, *args, conditional: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if conditional and self.num_classes == 0:
            raise GenzooError("model.conditional=true needs labelled data, and this data has no classes: "
                              "set model.conditional=false.")
        self.conditional = bool(conditional)

    def class_labels(self, y: Tensor | None) -> Tensor | None:
        return y if self.conditional else None

    def logits(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, levels, H, W) logits of integer images ``x``."""
        return self.net(self.scale(x), self.class_labels(y))

    def log_likelihood(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        log_probs = F.log_softmax(self.logits(x, y), dim=2)  # (B, C, levels, H, W)
        return log_probs.gather(2, x.long().unsqueeze(2)).flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, fast: bool = True) -> Tensor:
        """(n, C, H, W) samples in evaluation mode (no dropout), drawn with the global torch RNG.

        ``fast``: use the network's cached ``generate`` where it has one (PixelCNN, Gated PixelCNN and the
        PixelRNNs do); it visits the sub-pixels in the naive order and calls ``draw`` once for each, so with the
        same seed both paths give the same samples up to rare flips from float rounding.
        """
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        was_training = self.training
        self.eval()
        try:
            if fast and hasattr(self.net, "generate"):
                return self.net.generate(n, self.class_labels(y), draw, self.scale, self.shape)
            return self.sample_naive(n, y)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_naive(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """Pixel by pixel, channel by channel: one full network pass per sub-pixel, in the current mode.

        ``steps``: stop after that many sub-pixels (the rest stay 0), so a benchmark can time a prefix.
        """
        c, h, w = self.shape
        x = torch.zeros(n, c, h, w, dtype=torch.long, device=self.device)
        order = ((i, j, k) for i in range(h) for j in range(w) for k in range(c))
        for _, (i, j, k) in zip(range(c * h * w if steps is None else steps), order):
            x[:, k, i, j] = draw(self.logits(x, y)[:, k, :, i, j])
        return x


def draw(logits: Tensor) -> Tensor:
    """(n,) values drawn from the softmax of (n, levels) logits, in float32 whatever the network's precision.

    The one draw both samplers call, so that they consume the RNG alike.
    """
    return torch.multinomial(F.softmax(logits.float(), dim=1), 1).squeeze(1)


draw.capturable = True  # no host sync: a network may record it into a CUDA graph (see genzoo.nn.fast_pixelcnn)
