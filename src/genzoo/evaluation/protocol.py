"""The protocol of a fidelity number: what an FID, IS or KID was measured with, written beside it.

FIDs of one model differ by several points between papers because of the protocol (Inception weights, resizing,
10k or 50k samples, a train or a test reference), so a number is only comparable with one of the same protocol.
genzoo records, per stage, one protocol for all the stage's fidelity metrics (they come from one pass):

    {"extractor": "genzoo-domain-classifier", "weights": "<sha256 prefix of the weights>", "samples": 180,
     "reference": "digits test", "reference_size": 180, "classifier_acc": 0.983,
     "per_class": {"classes": 10, "samples": "as many as the class's reference images"}}

under the key ``{stage}/fidelity_protocol`` in ``metrics.json`` and the W&B run's summary — one mapping beside the
numbers rather than keys such as ``test/fid@n=180,…``, so metric names stay fixed (a monitor, a sweep, a W&B chart
and a report column can name them) and the protocol stays readable. A ``published:`` number in ``experiments/``
states its protocol with the same fields (``extractor``, ``samples``, ``reference``, ``reference_size``), in words
where the source gives no more; :func:`describe` writes either as one line for reports.
"""

from __future__ import annotations

import json
import re

# Metrics whose value depends on the protocol: the Fidelity callback's, at any stage.
FIDELITY_METRICS = ("fid", "is", "kid", "precision", "recall", "fid_floor", "intra_fid", "intra_fid_floor")
PER_CLASS = re.compile(r"^fid_class/\d+$")
SUFFIX = "fidelity_protocol"
FIELDS = ("extractor", "samples", "reference", "reference_size")  # what every protocol states


def is_fidelity_metric(key: str) -> bool:
    """``test/fid``, ``val/kid``, ``test/fid_class/3`` …: a number measured under a fidelity protocol."""
    stage, _, name = key.partition("/")
    return bool(stage) and (name in FIDELITY_METRICS or bool(PER_CLASS.match(name)))


def protocol_key(metric: str) -> str:
    """Where the protocol of ``metric`` is recorded: ``test/fid`` → ``test/fidelity_protocol``."""
    return f"{metric.partition('/')[0]}/{SUFFIX}"


def record(extractor_name: str, weights: str, samples: int, dataset: str, split: str, reference_size: int,
           classifier_acc: float | None = None, per_class: dict | None = None) -> dict:
    out = {"extractor": extractor_name, "weights": weights, "samples": int(samples),
           "reference": f"{dataset} {split}", "reference_size": int(reference_size)}
    if classifier_acc is not None:
        out["classifier_acc"] = round(float(classifier_acc), 4)
    if per_class is not None:
        out["per_class"] = per_class
    return out


def describe(protocol: dict | None) -> str:
    """One line: 'genzoo-domain-classifier #1a2b3c4d (test accuracy 0.983), 180 generated vs 180 digits test'."""
    if not protocol:
        return "protocol not recorded"
    weights = f" #{str(protocol['weights'])[:8]}" if protocol.get("weights") else ""
    accuracy = f" (test accuracy {protocol['classifier_acc']:.3f})" if protocol.get("classifier_acc") else ""
    return (f"{protocol.get('extractor', '?')}{weights}{accuracy}, {protocol.get('samples', '?')} generated vs "
            f"{protocol.get('reference_size', '?')} {protocol.get('reference', '?')}")


def identity(protocol: dict | None) -> str:
    """Two numbers compare when their protocols' identities are equal (the classifier's accuracy follows from its
    weights, so it is left out)."""
    if not protocol:
        return ""
    return json.dumps({k: v for k, v in protocol.items() if k != "classifier_acc"}, sort_keys=True)
