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
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Pixel by pixel, channel by channel: one network pass per sub-pixel."""
        c, h, w = self.shape
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        x = torch.zeros(n, c, h, w, dtype=torch.long, device=self.device)
        for i in range(h):
            for j in range(w):
                for k in range(c):
                    probs = F.softmax(self.logits(x, y)[:, k, :, i, j].float(), dim=1)  # (n, levels)
                    x[:, k, i, j] = torch.multinomial(probs, 1).squeeze(1)
        return x
