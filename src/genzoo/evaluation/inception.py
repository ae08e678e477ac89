"""torch-fidelity's Inception-v3 (the TensorFlow FID network of Heusel et al. 2017, ported bit-exactly) for
genzoo's images, and where its weights come from.

genzoo's extractors take uint8 images ``(B, C, H, W)`` in 0…255 with the data's channels; Inception wants three,
so grey images are repeated over RGB before torch-fidelity resizes them to 299×299 (bilinear, like TF1, no
antialiasing). FID/KID/precision-recall use the 2048-d pool features, IS the 1008 "unbiased" logits, as
torch-fidelity does.

Weights: ``fidelity.inception_weights=PATH`` names a local file; otherwise genzoo looks for torch-fidelity's file
under ``paths.cache_dir/torch_fidelity/`` and downloads it there once (never into the home folder). Offline with
no file, ``InceptionWeightsMissing`` names the file and where to put it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from genzoo.errors import GenzooError

NAME = "genzoo-inception-v3"
WEIGHTS_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]


class InceptionWeightsMissing(GenzooError):
    """The Inception weights are neither on disk nor downloadable."""


def inception_weights(cache_dir: str | Path, path: str | None = None, download: bool = True) -> Path:
    """The local file of the Inception weights: ``path`` when given, else torch-fidelity's file in the cache."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InceptionWeightsMissing(
                f"fidelity.inception_weights={path} does not exist: give the path of {WEIGHTS_FILE} "
                f"(from {URL_INCEPTION_V3}).")
        return p
    target = Path(cache_dir) / "torch_fidelity" / WEIGHTS_FILE
    if target.is_file():
        return target
    hint = (f"the Inception weights {WEIGHTS_FILE} are not in {target.parent}: download {URL_INCEPTION_V3} "
            f"on a machine with internet and put it there (or set fidelity.inception_weights=PATH), "
            f"or use fidelity.extractor=classifier.")
    if not download:
        raise InceptionWeightsMissing(hint[0].upper() + hint[1:])
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(target), progress=True)
    except Exception as e:  # noqa: BLE001 - URLError, socket errors, HTTP errors: all mean "not downloadable"
        raise InceptionWeightsMissing(f"Offline ({type(e).__name__}): {hint}") from None
    return target


class InceptionExtractor(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 that also takes one-channel images (registered as ``genzoo-inception-v3``)."""

    def forward(self, x: Tensor):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return super().forward(x.contiguous())
