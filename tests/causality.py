"""Which inputs each sub-pixel's logits depend on, measured by gradients, and which they may depend on."""

from __future__ import annotations

import itertools

import torch


def dependency_map(model, shape) -> torch.Tensor:
    """dep[c, i, j, c', i', j'] = 1 where the logits of sub-pixel (c, i, j) change with input (c', i', j')."""
    c, h, w = shape
    # Several random inputs: at a single input a ReLU can be off on every path and hide a real dependency.
    x = torch.randn(4, c, h, w, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logits = model.level_log_probs(x)  # (4, C, L, H, W): each sub-pixel's distribution over the levels
    dep = torch.zeros(c, h, w, c, h, w, dtype=torch.bool)
    for k, i, j in itertools.product(range(c), range(h), range(w)):
        (grad,) = torch.autograd.grad(logits[:, k, :, i, j].sum(), x, retain_graph=True)
        dep[k, i, j] = grad.abs().sum(0) > 0
    return dep


def allowed_map(shape) -> torch.Tensor:
    """Raster order over pixels, then channel order within a pixel: strictly earlier sub-pixels only."""
    c, h, w = shape
    order = torch.arange(h * w).view(h, w)
    allowed = torch.zeros(c, h, w, c, h, w, dtype=torch.bool)
    for k, i, j, k2, i2, j2 in itertools.product(range(c), range(h), range(w), range(c), range(h), range(w)):
        earlier_pixel = order[i2, j2] < order[i, j]
        same_pixel_earlier_channel = (i2, j2) == (i, j) and k2 < k
        allowed[k, i, j, k2, i2, j2] = earlier_pixel or same_pixel_earlier_channel
    return allowed
