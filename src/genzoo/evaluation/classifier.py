"""A domain classifier as feature extractor: a small CNN trained once per data set on its training split.

Inception-v3 was trained on ImageNet photographs; on 8×8 digits or 28×28 MNIST its features say little, and its
weights need a download. A classifier trained on the data set itself gives features that separate what matters
there: the domain-specific variant of FID (Heusel et al. 2017) and IS (Salimans et al. 2016) that is common
for MNIST-like data. It is only as good as its test accuracy, so that accuracy is stored with its weights and
logged beside every metric it produces (``…/classifier_acc``).

    features = penultimate layer (ReLU, ``feature_dim`` wide)  → FID, KID, precision/recall
    logits   = last layer (one per class)                       → Inception Score (softmax over classes)

Input: uint8 images ``(B, C, H, W)`` in 0…255 (genzoo's common extractor input, see ``features.to_uint8``).
The weights are cached under ``paths.cache_dir/classifiers/`` in a file named by the data set, a hash of the
training images and the classifier config, so a change of data or config trains a new one. Training is seeded
and runs on one device: AdamW with a one-cycle schedule, dropout and random shifts of ±1 pixel.
Left out: early stopping and any other augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_fidelity import FeatureExtractorBase

from genzoo.files import save_atomically

log = logging.getLogger(__name__)

NAME = "genzoo-domain-classifier"


class ClassifierNet(nn.Module):
    """conv 3×3 (``width``) → conv 3×3 (2·``width``) → conv 3×3 (2·``width``), each with a ReLU, max-pooled
    after the first two while the map is larger than 4×4, pooled to 4×4, then a hidden layer of ``feature_dim``
    units (the features) and the class logits. ``feature_scale`` (set after training to 1 / RMS of the training
    features) puts the features on Inception's scale of about 1 per unit, where KID's polynomial kernel
    (x·y/d + 1)³ is meant to work."""

    def __init__(self, in_channels: int, size: int, num_classes: int, width: int = 32, feature_dim: int = 128,
                 dropout: float = 0.3):
        super().__init__()
        layers, c, s = [], in_channels, size
        for out in (width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            if s > 4 and len(layers) < 6:
                layers.append(nn.MaxPool2d(2))
                s //= 2
            c = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(c * 16, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features (B, feature_dim), logits (B, num_classes)) of float images in [0, 1]."""
        h = self.hidden(self.body(x))
        return h * self.feature_scale, self.head(h)


def random_shift(x: Tensor, pixels: int) -> Tensor:
    """Each image moved by up to ``pixels`` in each direction (zero fill): handwriting is not centred exactly,
    and shifted copies keep a small network from memorising positions. One slice per offset, not per image."""
    if pixels <= 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pixels,) * 4)
    offsets = torch.randint(0, (2 * pixels + 1) ** 2, (len(x),))
    out = torch.empty_like(x)
    for o in offsets.unique().tolist():
        dy, dx = divmod(o, 2 * pixels + 1)
        rows = (offsets == o).nonzero().squeeze(1).to(x.device)
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out


def classifier_path(cache_dir: str | Path, dataset: str, data_hash: str, config: dict) -> Path:
    key = hashlib.sha256(json.dumps({"data": data_hash, **config}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "classifiers" / f"{dataset}-{key}.pt"


def accuracy(net: ClassifierNet, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(images[i:i + batch_size].float() / 255)[1].argmax(1)
                               for i in range(0, len(images), batch_size)])
    return (predicted.cpu() == labels.cpu()).float().mean().item()


def train_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, config: dict,
                     path: Path, device="cpu") -> dict:
    """Fit the classifier to ``train`` (uint8 0…255 images, labels) on ``device``; save weights (on the CPU),
    config and test accuracy."""
    images, labels = train
    cfg = {"width": 32, "feature_dim": 128, "dropout": 0.3, "epochs": 20, "lr": 3e-3, "batch_size": 64, "seed": 0,
           "shift": 1,
           **config}
    arch = {"in_channels": images.shape[1], "size": min(images.shape[2:]), "num_classes": num_classes,
            "width": cfg["width"], "feature_dim": cfg["feature_dim"], "dropout": cfg["dropout"]}
    log.info("Training the domain classifier for %d epochs on %d images (once; cached at %s).", cfg["epochs"],
             len(images), path)
    threads = torch.get_num_threads()
    # Batches of 64 8×8 images are too small to share: on a busy 2-core machine a second thread made each step
    # 7× slower (measured), so the classifier trains on one.
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        state = _fit(images, labels, test, arch, cfg, torch.device(device))
    finally:
        torch.set_num_threads(threads)
    save_atomically(state, path)  # a crash never leaves half a classifier for the next run to load
    log.info("Domain classifier test accuracy: %.4f", state["test_accuracy"])
    return state


def _fit(images: Tensor, labels: Tensor, test: tuple[Tensor, Tensor], arch: dict, cfg: dict, device) -> dict:
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(cfg["seed"])
        net = ClassifierNet(**arch).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
        steps = cfg["epochs"] * -(-len(images) // cfg["batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
        x_all, y_all = images.to(device, copy=True), labels.to(device, torch.long, copy=True)
        for _ in range(cfg["epochs"]):
            net.train()
            for idx in torch.randperm(len(x_all)).split(cfg["batch_size"]):
                x = random_shift(x_all[idx].float() / 255, cfg["shift"])
                loss = F.cross_entropy(net(x)[1], y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            h = torch.cat([net(x_all[i:i + 512].float() / 255)[0] for i in range(0, len(x_all), 512)])
            net.feature_scale.fill_(1.0 / h.pow(2).mean().sqrt().clamp_min(1e-6))
    test_accuracy = accuracy(net, test[0].to(device), test[1])
    return {"arch": arch, "config": cfg, "state_dict": net.cpu().state_dict(), "test_accuracy": test_accuracy}


class DomainClassifierExtractor(FeatureExtractorBase):
    """The trained classifier in torch-fidelity's extractor interface (registered as ``genzoo-domain-classifier``;
    ``feature_extractor_weights_path`` names the cached file), so ``calculate_metrics`` can use it too."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{NAME} needs feature_extractor_weights_path: the cached classifier file.")
        state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.arch = dict(state["arch"])
        self.net = ClassifierNet(**self.arch)
        self.net.load_state_dict(state["state_dict"])
        self.test_accuracy = float(state["test_accuracy"])
        self.num_features = state["arch"]["feature_dim"]  # torchmetrics reads this instead of a 299×299 probe
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False  # a few milliseconds a batch: compiling would cost more than it saves

    def get_dummy_input_for_compile(self) -> Tensor:
        """One uint8 image of the size the classifier was trained on (what torch-fidelity would trace with)."""
        arch = self.arch
        return torch.zeros(1, arch["in_channels"], arch["size"], arch["size"], dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features, logits = self.net(x.float() / 255)
        out = {"features": features, "logits": logits}
        return tuple(out[name] for name in self.features_list)
