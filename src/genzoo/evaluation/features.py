"""Feature extraction for generated and real images, the same way everywhere (callback, genzoo-eval, DDP).

Every extractor is a torch-fidelity ``FeatureExtractorBase`` registered once per process, so
``torch_fidelity.calculate_metrics(feature_extractor=NAME, feature_extractor_weights_path=…)`` computes with the
very module genzoo uses. Extractors take uint8 images in 0…255: a genzoo image with ``levels`` values is mapped by
``round(x·255/(levels-1))``, which keeps every level distinct.

Generated images are drawn in chunks of ``batch_size``; chunk ``k`` is sampled with seed ``(seed, k)``, and under
DDP rank ``r`` of ``W`` draws chunks ``r, r+W, …``. The gathered features are put back in chunk order, so the
evaluated samples, and therefore every metric, do not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch_fidelity
from torch import Tensor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from tqdm.auto import tqdm

from genzoo.evaluation import classifier, inception
from genzoo.files import file_sha256
from genzoo.nn.modes import evaluating


def register_extractors() -> None:
    """Register genzoo's extractors with torch-fidelity, once per process (a second registration raises)."""
    for name, cls in ((classifier.NAME, classifier.DomainClassifierExtractor),
                      (inception.NAME, inception.InceptionExtractor)):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(name, cls)


def to_uint8(x: Tensor, levels: int) -> Tensor:
    """Integer images in 0…levels-1 to uint8 in 0…255."""
    if levels == 256:
        return x.to(torch.uint8)
    return (x.float() * (255.0 / (levels - 1))).round_().to(torch.uint8)


class BareTensors(torch.utils.data.Dataset):
    """Images as torch-fidelity's ``calculate_metrics`` takes them: a dataset of bare uint8 (C, H, W) tensors."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def file_hash(path: str | Path) -> str:
    return file_sha256(path)[:16]


def tensor_hash(x: Tensor) -> str:
    return hashlib.sha256(x.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


@dataclass
class Extractor:
    """A built extractor: the torch-fidelity module, its registry name, weights file and what each metric uses."""

    module: torch.nn.Module
    name: str
    weights_path: Path
    feature_layer: str   # FID, KID, precision/recall
    logits_layer: str    # IS
    accuracy: float | None = None  # the domain classifier's test accuracy
    calls: int = field(default=0)  # forward passes, so tests can see a cache hit
    weights_hash: str | None = None  # of the loaded weights; None: the hash of the weights file

    @property
    def digest(self) -> str:
        """The hash of the weights (of the loaded ones, else of the file)."""
        return self.weights_hash or file_hash(self.weights_path)

    @property
    def key(self) -> str:
        """Name + weights hash: two extractors with the same key give the same features."""
        return f"{self.name}-{self.digest}"

    def to(self, device) -> Extractor:
        self.module.to(device)
        return self


def build_extractor(kind: str, weights_path: Path, device="cpu", state: dict | None = None,
                    name: str | None = None) -> Extractor:
    """The module behind ``kind`` ('classifier' or 'inception'), loaded from ``weights_path`` (or, for the
    classifier, from its already loaded ``state``: the file may be unwritable, or on another machine's disk).
    ``name``: the classifier's name in protocols (``classifier.ROTATION_NAME`` for the rotation classifier)."""
    register_extractors()
    if kind == "classifier":
        layers = ("features", "logits")
        module = classifier.DomainClassifierExtractor(classifier.NAME, list(layers), str(weights_path), state=state)
        return Extractor(module, name or classifier.NAME, Path(weights_path), *layers,
                         accuracy=module.test_accuracy, weights_hash=module.weights_hash).to(device)
    layers = ("2048", "logits_unbiased")
    module = inception.InceptionExtractor(inception.NAME, list(layers),
                                          feature_extractor_weights_path=str(weights_path))
    return Extractor(module, inception.NAME, Path(weights_path), *layers).to(device)


def progress(total: int, desc: str, enabled: bool = True):
    # tqdm on stderr, only where someone watches (a terminal) and only on rank zero: logs stay clean.
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not enabled or not sys.stderr.isatty())


@torch.no_grad()
def extract(extractor: Extractor, images: Tensor, levels: int, batch_size: int = 256, device=None,
            desc: str | None = None, show: bool = True) -> dict[str, Tensor]:
    """{'features': (N, D), 'logits': (N, K)} float32 on the CPU for integer images ``(N, C, H, W)``."""
    device = device or next(extractor.module.parameters()).device
    if len(images) == 0:  # a rank without a chunk still needs (0, D) tensors to take part in the gather
        return {k: v[:0] for k, v in extract(extractor, images.new_zeros((1, *images.shape[1:])), levels,
                                             batch_size, device, desc, show=False).items()}
    out = {"features": [], "logits": []}
    with progress(len(images), desc or "features", show) as bar:
        for i in range(0, len(images), batch_size):
            batch = to_uint8(images[i:i + batch_size].to(device), levels)
            extractor.calls += 1
            got = extractor.module.convert_features_tuple_to_dict(extractor.module(batch))
            out["features"].append(got[extractor.feature_layer].float().cpu())
            out["logits"].append(got[extractor.logits_layer].float().cpu())
            bar.update(len(batch))
    return {k: torch.cat(v) for k, v in out.items()}


def chunk_seed(seed: int, chunk: int) -> int:
    return (int(seed) * 1_000_003 + chunk) % (2**63 - 1)


@torch.no_grad()
def sample_chunks(model, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                  show: bool = True, label: int | None = None) -> tuple[Tensor, Tensor]:
    """This rank's share of ``n`` samples: (images (m, C, H, W) on the CPU, chunk index of each image (m,));
    ``label``: all of class ``label`` (``model.sample(n, y)``)."""
    chunks = [(k, min(batch_size, n - k * batch_size)) for k in range(-(-n // batch_size))][rank::world]
    devices = [model.device] if model.device.type == "cuda" else []
    images, index = [], []
    with evaluating(model), progress(sum(size for _, size in chunks), "sampling", show) as bar:
        for k, size in chunks:
            with torch.random.fork_rng(devices=devices):  # the caller's RNG stream stays where it was
                torch.manual_seed(chunk_seed(seed, k))
                if label is None:
                    images.append(model.sample(size).cpu())
                else:
                    y = torch.full((size,), int(label), dtype=torch.long, device=model.device)
                    images.append(model.sample(size, y).cpu())
            index.append(torch.full((size,), k, dtype=torch.long))
            bar.update(size)
    if not images:  # more ranks than chunks
        return torch.zeros(0, *model.shape, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(images), torch.cat(index)


def gather_rows(x: Tensor, all_gather, world: int) -> Tensor:
    """Concatenate every rank's rows (rank order); ranks may hold different counts. Collective: all ranks call."""
    if world == 1:
        return x
    counts = all_gather(torch.tensor([len(x)], device=x.device)).reshape(world).tolist()
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[:len(x)] = x
    gathered = all_gather(padded)  # (world, max(counts), …)
    return torch.cat([gathered[r, :c] for r, c in enumerate(counts)])


def generated_features(model, extractor: Extractor, n: int, batch_size: int, seed: int, rank: int = 0,
                       world: int = 1, all_gather=None, device=None, label: int | None = None) -> dict[str, Tensor]:
    """Features of ``n`` samples of ``model`` (of class ``label`` when given), drawn and extracted in shares by
    every rank, gathered in chunk order on every rank. Collective under DDP: every rank must call it."""
    images, index = sample_chunks(model, n, batch_size, seed, rank, world, show=rank == 0, label=label)
    feats = extract(extractor, images, model.levels, batch_size, device, "features (samples)", show=rank == 0)
    if world > 1:
        dev = device or next(extractor.module.parameters()).device
        index = gather_rows(index.to(dev), all_gather, world).cpu()
        feats = {k: gather_rows(v.to(dev), all_gather, world).cpu() for k, v in feats.items()}
        order = torch.sort(index, stable=True).indices  # rows of one chunk keep their order
        feats = {k: v[order] for k, v in feats.items()}
    return feats
