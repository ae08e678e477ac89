"""Reference features and FID statistics, computed once and kept under ``paths.cache_dir/fidelity/``.

torch-fidelity caches by a name the caller gives and knows neither the weights nor n; genzoo's key names all of
what changes the numbers: data set, split, a hash of the split's images, extractor + weights hash, and n. A file
holds the features (KID and precision/recall need them), the logits and the FID statistics (mean and covariance),
as plain tensors, so it loads with ``torch.load(weights_only=True)``. A cached file is checked when loaded (the
four tensors, n rows of features and logits, statistics of the features' width, all finite): one that fails is
computed again after one warning naming it, and a cache folder that refuses the file only warns. Reference
statistics are computed on one device: real images are never padded by a distributed sampler.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor
from torch_fidelity.metric_fid import fid_features_to_statistics

from genzoo.evaluation.features import Extractor, extract, tensor_hash
from genzoo.files import one_line, save_to_cache

log = logging.getLogger(__name__)


def subset(images: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` images of a split (all of it when it holds no more), chosen by a fixed seed, in split order."""
    if n >= len(images):
        return images
    g = torch.Generator().manual_seed(seed)
    return images[torch.randperm(len(images), generator=g)[:n].sort().values]


def reference_key(dataset: str, split: str, images: Tensor, extractor: Extractor, n: int) -> str:
    key = f"{dataset}|{split}|{tensor_hash(images)}|{extractor.key}|{n}"
    return f"{dataset}-{split}-n{n}-{extractor.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def statistics(features: Tensor) -> dict[str, Tensor]:
    """FID statistics as torch-fidelity computes them (``np.cov`` with N-1), stored as tensors."""
    stats = fid_features_to_statistics(features.cpu())
    return {"mu": torch.from_numpy(stats["mu"]), "sigma": torch.from_numpy(stats["sigma"])}


def reference(extractor: Extractor, cache_dir: str | Path, dataset: str, split: str, images: Tensor, levels: int,
              n: int, batch_size: int = 256, device=None) -> dict[str, Tensor]:
    """{'features', 'logits', 'mu', 'sigma'} of ``n`` images of ``split``, from the cache when present.

    Not collective: under DDP call it on rank zero only."""
    path = Path(cache_dir) / "fidelity" / f"{reference_key(dataset, split, images, extractor, n)}.pt"
    if path.exists():
        try:
            return checked(torch.load(path, map_location="cpu", weights_only=True), min(n, len(images)))
        except Exception as e:  # noqa: BLE001 - a torn, foreign or rewritten file: recompute it
            log.warning("The cached reference statistics %s are damaged (%s): computing them again.", path,
                        one_line(e))
    feats = extract(extractor, subset(images, n), levels, batch_size, device, f"features ({dataset} {split})")
    out = {**feats, **statistics(feats["features"])}
    save_to_cache(out, path, cache_dir, "The reference statistics")
    return out


def checked(stats, n: int) -> dict[str, Tensor]:
    """``stats`` if it is what ``reference`` writes for ``n`` images, else ``ValueError`` saying what is not."""
    if not isinstance(stats, dict) or not all(torch.is_tensor(stats.get(k)) for k in ("features", "logits", "mu",
                                                                                        "sigma")):
        raise ValueError("it does not hold the tensors features, logits, mu and sigma")
    features, logits, mu, sigma = (stats[k] for k in ("features", "logits", "mu", "sigma"))
    if features.ndim != 2 or len(features) != n or logits.ndim != 2 or len(logits) != n:
        raise ValueError(f"features {tuple(features.shape)} and logits {tuple(logits.shape)} are not of {n} images")
    d = features.shape[1]
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} do not fit {d} features")
    if not all(torch.isfinite(t).all() for t in (features, logits, mu, sigma)):
        raise ValueError("some values are not finite numbers")
    return stats
