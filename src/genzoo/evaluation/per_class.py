"""Intra-class FID (Miyato & Koyama 2018, "cGANs with Projection Discriminator"): for a class-conditional model,
the FID of its samples of class c against the reference images of class c, for every class, and their mean:

    FID_c     = FID(features of G(·, c), features of X_c)          logged as {stage}/fid_class/{c}
    intra-FID = (1/K) Σ_c FID_c                                    logged as {stage}/intra_fid

A model that draws good images of the wrong class scores well on the overall FID and badly here. Class c is
compared at n_c = its number of reference images in the split (at most ``n_per_class``), with n_c samples drawn
with label c (seeded by the run's seed and c). Beside it, ``{stage}/intra_fid_floor``: the same mean for n_c
training images of class c, the best a model can score at these n_c (at n_c ≈ 18 on the digits the floor is far
above 0: read intra-FID against it). Reference statistics per class are cached like the overall ones, under the
split name ``{split}-class{c}``. Left out: classes with fewer than two reference images (no covariance), and
per-class IS/KID.
"""

from __future__ import annotations

import statistics as stats

import numpy as np
import torch
from torch import Tensor

from genzoo.evaluation import cache
from genzoo.evaluation.features import Extractor
from genzoo.evaluation.metrics import fid


def class_sizes(labels: Tensor, num_classes: int, n_per_class: int | None = None) -> list[tuple[int, int]]:
    """(class, n_c) for every class with at least two images in ``labels``."""
    counts = torch.bincount(labels.long().clamp(min=0), minlength=num_classes)[:num_classes].tolist()
    sizes = [(c, min(k, n_per_class) if n_per_class else k) for c, k in enumerate(counts)]
    return [(c, k) for c, k in sizes if k >= 2]


def class_seed(seed: int, c: int) -> int:
    """The sampling seed of class c: apart from the overall samples' seed and every other class's."""
    return int(np.random.SeedSequence([int(seed), 1 + int(c)]).generate_state(1, np.uint64)[0] % 2**63)


def intra_class_fid(generated: dict[int, dict[str, Tensor]], extractor: Extractor, cache_dir, dataset: str,
                    split: str, real: Tensor, labels: Tensor, train: Tensor, train_labels: Tensor, levels: int,
                    batch_size: int, device=None, floor: bool = True) -> dict[str, float]:
    """{'fid_class/c': …, 'intra_fid': …, 'intra_fid_floor': …} from each class's generated features
    (``generated[c]``, n_c rows). Not collective: rank zero alone calls it."""
    out, floors = {}, []
    for c, feats in generated.items():
        n = len(feats["features"])
        reference = cache.reference(extractor, cache_dir, dataset, f"{split}-class{c}", real[labels == c], levels,
                                    n, batch_size, device)
        out[f"fid_class/{c}"] = fid(cache.statistics(feats["features"]), reference)
        own = train[train_labels == c]
        if floor and len(own) >= 2:
            floors.append(fid(cache.reference(extractor, cache_dir, dataset, f"train-class{c}", own, levels,
                                              min(n, len(own)), batch_size, device), reference))
    if out:
        out["intra_fid"] = stats.fmean(out.values())
    if floors:
        out["intra_fid_floor"] = stats.fmean(floors)
    return out
