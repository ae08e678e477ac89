"""The check both sampling benchmarks run on a cached sampler (untimed): its samples against the naive sampler's.

One full network pass over the cached sampler's samples gives, at every sub-pixel, the logits the naive sampler
computes there (causality). The cached sampler is run again from the same seed, recording each draw's logits; the
largest logit difference is taken over all sub-pixels, and a draw counts as flipped by float rounding where the
full pass's logits, drawn with the same uniform, give another value. It also counts the tensor operations a
sampler runs, which on a GPU are its kernel launches. For a distribution other than the categorical (PixelCNN++'s
mixture) ``cdf_gap`` compares the CDFs each draw inverted with the full pass's instead.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genzoo.models.autoregressive import Draws


def against_full_pass(model, batch: int, seed: int):
    """(samples, largest |cached - full| logit, flipped draws, all draws) of ``model.net.generate``."""
    records, made = [], []

    class Recording(Draws):
        capturable = False  # run the loop eagerly, also on a GPU: its logits are read as they are made

        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

        def __call__(self, logits, k, positions, u=None):
            records.append((k, positions, logits.clone()))
            return super().__call__(logits, k, positions, u)

    torch.manual_seed(seed)
    x = model.net.generate(batch, None, Recording, model.scale, model.shape)
    with torch.no_grad():
        full = model.logits(x).flatten(3)  # (B, C, levels, H·W)
    draws, flat = made[-1], x.flatten(2)  # (B, C, H·W)
    worst, flips = 0.0, 0
    for k, positions, logits in records:
        naive = full[:, k, :, positions].transpose(1, 2)  # (B, P, levels)
        worst = max(worst, (logits - naive).abs().max().item())
        flips += int((Draws.__call__(draws, naive, k, positions) != flat[:, k, positions]).sum())
    return x, worst, flips, x.numel()


class CountOps(TorchDispatchMode):
    """Counts the tensor operations run under it, views (which launch nothing) left out."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))


def count_ops(sample) -> int:
    with torch.inference_mode(), CountOps() as counter:
        sample()
    return counter.ops


def cdf_gap(model, x: torch.Tensor) -> float:
    """Largest difference between the CDFs the cached sampler drew from (recorded, a batch the size of x's, seed 0)
    and one full pass over the samples it drew."""
    records = []

    class Recording(Draws):
        def invert(self, cdf, k, positions, u=None):
            records.append((k, positions.clone(), cdf.clone()))
            return super().invert(cdf, k, positions, u)

    torch.manual_seed(0)
    again = model.net.generate(len(x), None, Recording, model.scale, model.shape)
    with torch.no_grad():
        params = model.logits(again).flatten(2).transpose(1, 2)  # (n, H·W, P)
    earlier = again.flatten(2).transpose(1, 2)
    worst = 0.0
    for k, positions, cdf in records:
        full = model.distribution.cdf(params[:, positions], k, earlier[:, positions, :k])
        worst = max(worst, (cdf - full).abs().max().item())
    return worst
