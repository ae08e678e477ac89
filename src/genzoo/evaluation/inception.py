"""torch-fidelity's Inception-v3 (the TensorFlow FID network of Heusel et al. 2017, ported bit-exactly) for
genzoo's images, and where its weights come from.

genzoo's extractors take uint8 images ``(B, C, H, W)`` in 0…255 with the data's channels; Inception wants three,
so grey images are repeated over RGB before torch-fidelity resizes them to 299×299 (bilinear, like TF1, no
antialiasing). FID/KID/precision-recall use the 2048-d pool features, IS the 1008 "unbiased" logits, as
torch-fidelity does.

Weights: ``fidelity.inception_weights=PATH`` names a local file; otherwise genzoo looks for torch-fidelity's file
under ``paths.cache_dir/torch_fidelity/`` and downloads it there once (never into the home folder). Offline with
no file, ``InceptionWeightsMissing`` names the file and where to put it. The cached file is checked against the
sha256 prefix in its name (torch.hub's convention: ``…-6726825d.pth``), hashed once per process; a damaged one is
downloaded again (checked the same way, and moved over the old one only when whole) with one warning naming it,
or, where it cannot be, the missing-weights sentence names the damaged file. A file given by
``fidelity.inception_weights`` is the user's own, not a cache: genzoo reads it as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor
from torch.hub import HASH_REGEX
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from genzoo.errors import GenzooError
from genzoo.files import file_sha256, one_line

log = logging.getLogger(__name__)
NAME = "genzoo-inception-v3"
WEIGHTS_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]
SHA256_PREFIX = HASH_REGEX.search(WEIGHTS_FILE).group(1)  # "6726825d"


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
    damage = damaged(target) if target.exists() else None
    if target.exists() and damage is None:
        return target
    where = (f"download {URL_INCEPTION_V3} on a machine with internet and put it there (or set "
             f"fidelity.inception_weights=PATH), or use fidelity.extractor=classifier.")
    if damage:
        hint = f"the cached Inception weights {target} are damaged ({damage}): {where}"
    else:
        hint = f"the Inception weights {WEIGHTS_FILE} are not in {target.parent}: {where}"
    if not download:
        raise InceptionWeightsMissing(hint[0].upper() + hint[1:])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub writes a temporary file, checks its hash and moves it over the target only when whole
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(target), hash_prefix=SHA256_PREFIX, progress=True)
    except Exception as e:  # noqa: BLE001 - URLError, socket errors, HTTP errors, a bad hash, a read-only folder
        raise InceptionWeightsMissing(f"Downloading them failed ({one_line(e)}): {hint}") from None
    if damage:  # logged once the new file is there: where it is not, the sentence above says all
        log.warning("The cached Inception weights %s were damaged (%s): downloaded them again.", target, damage)
    return target


def damaged(path: Path) -> str | None:
    """Why the cached weights file is not torch-fidelity's (its sha256 does not begin as its name says), or None."""
    try:
        digest = file_sha256(path)
    except OSError as e:
        return f"unreadable: {one_line(e)}"
    if not digest.startswith(SHA256_PREFIX):
        return f"its sha256 begins {digest[:len(SHA256_PREFIX)]}, not {SHA256_PREFIX}"
    return None


class InceptionExtractor(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 that also takes one-channel images (registered as ``genzoo-inception-v3``)."""

    def forward(self, x: Tensor):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return super().forward(x.contiguous())
