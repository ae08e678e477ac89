"""FID, IS, KID and precision/recall from features, through torch-fidelity's own feature-to-metric functions, so a
genzoo number is torch-fidelity's number on the same features.

- FID (Heusel et al. 2017): ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) of Gaussians fitted to the features.
- IS (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)), averaged over ``isc_splits`` splits of the samples.
- KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, averaged over ``kid_subsets``
  random subsets; the subset size is min(1000, n_generated, n_real), so it never exceeds n.
- Precision/recall (Kynkäänniemi et al. 2019): the share of generated samples inside the real k-NN manifold
  (k = 3), and of real samples inside the generated one.
Left out: standard deviations of IS and KID (torch-fidelity returns them; genzoo logs the means), and the F-score.
All draws (IS shuffling, KID subsets) use ``seed``.
"""

from __future__ import annotations

from torch import Tensor
from torch_fidelity.metric_fid import fid_statistics_to_metric, KEY_METRIC_FID
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from genzoo.evaluation.cache import statistics


def fid(stats_1: dict[str, Tensor], stats_2: dict[str, Tensor]) -> float:
    as_numpy = [{k: s[k].numpy() for k in ("mu", "sigma")} for s in (stats_1, stats_2)]
    return float(fid_statistics_to_metric(*as_numpy, verbose=False)[KEY_METRIC_FID])


def kid_subset_size(n_1: int, n_2: int, cap: int = 1000) -> int:
    return min(cap, n_1, n_2)


def fidelity_metrics(generated: dict[str, Tensor], real: dict[str, Tensor], seed: int = 0, kid_subsets: int = 100,
                     isc_splits: int = 10) -> dict[str, float]:
    """{'fid', 'is', 'kid', 'precision', 'recall'}: ``generated``/``real`` hold 'features' and 'logits' (and
    ``real`` may hold its FID statistics 'mu', 'sigma' from the cache)."""
    g, r = generated["features"], real["features"]
    real_stats = real if "mu" in real else statistics(r)
    kid = kid_features_to_metric(g, r, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size(len(g), len(r)),
                                 rng_seed=seed, verbose=False)
    prc = prc_features_to_metric(g, r, verbose=False)
    isc = isc_features_to_metric(generated["logits"], splits=min(isc_splits, len(g)), rng_seed=seed)
    return {
        "fid": fid(statistics(g), real_stats),
        "is": float(isc[KEY_METRIC_ISC_MEAN]),
        "kid": float(kid[KEY_METRIC_KID_MEAN]),
        "precision": float(prc[KEY_METRIC_PRECISION]),
        "recall": float(prc[KEY_METRIC_RECALL]),
    }
