"""Sample-quality metrics written once: feature extractors (a domain classifier, torch-fidelity's Inception-v3),
reference statistics cached under ``paths.cache_dir``, and FID/IS/KID/precision-recall through torch-fidelity."""

from genzoo.evaluation.cache import reference
from genzoo.evaluation.features import Extractor, build_extractor, extract, generated_features, register_extractors
from genzoo.evaluation.metrics import fid, fidelity_metrics

__all__ = ["Extractor", "build_extractor", "extract", "fid", "fidelity_metrics", "generated_features", "reference",
           "register_extractors"]
