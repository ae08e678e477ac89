"""A domain classifier as feature extractor: a small CNN trained once per data set on its training split.

Inception-v3 was trained on ImageNet photographs; on 8×8 digits or 28×28 MNIST its features say little, and its
weights need a download. A classifier trained on the data set itself gives features that separate what matters
there: the domain-specific variant of FID (Heusel et al. 2017) and IS (Salimans et al. 2016) that is common
for MNIST-like data. It is only as good as its test accuracy, so that accuracy is stored with its weights and
logged beside every metric it produces (``…/classifier_acc``).

    features = penultimate layer (ReLU, ``feature_dim`` wide)  → FID, KID, precision/recall
    logits   = last layer (one per class)                       → Inception Score (softmax over classes)

Input: uint8 images ``(B, C, H, W)`` in 0…255 (genzoo's common extractor input, see ``features.to_uint8``).
Data without labels (the patches, CelebA, an image folder) get the same network trained on a task the images
label themselves: which of four quarter turns (0, 90, 180, 270 degrees) each square image was given (Gidaris et al.
2018, "Unsupervised representation learning by predicting image rotations"). Telling up from down needs the
objects and textures of the domain, so the penultimate features serve FID, KID and precision/recall as above; its
logits say only which way is up, so no Inception Score comes from it. It is named ``genzoo-rotation-classifier``
in every protocol, so its numbers never share a column with the labelled classifier's.

The weights are cached under ``paths.cache_dir/classifiers/`` in a file named by the data set, a hash of the
training images and the classifier config, so a change of data or config trains a new one. A cached file is
checked when loaded (it unpickles as plain tensors, names the architecture and config this run asks for, its
weights fit that network and are finite, its accuracy is a fraction); one that fails is trained again after one
warning naming it, so a damaged cache never costs a run its metrics. Training is seeded and runs on one device:
AdamW with a one-cycle schedule, dropout and random shifts of ±1 pixel, so a retrained file equals the lost one.
Left out: early stopping and any other augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_fidelity import FeatureExtractorBase

from genzoo.errors import GenzooError
from genzoo.files import one_line, save_to_cache

log = logging.getLogger(__name__)

NAME = "genzoo-domain-classifier"
ROTATION_NAME = "genzoo-rotation-classifier"  # the same network, trained to tell quarter turns apart
DEFAULTS = {"width": 32, "feature_dim": 128, "dropout": 0.3, "epochs": 20, "lr": 3e-3, "batch_size": 64, "seed": 0,
            "shift": 1}
KEYS = ("arch", "config", "state_dict", "test_accuracy")


class DamagedClassifier(GenzooError):
    """A classifier file that cannot be loaded, or is not the classifier it should be."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"The domain classifier file {path} cannot be used ({reason}): delete it, and the next run "
                         "trains it again.")
        self.path, self.reason = path, reason


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


def rotations(images: Tensor) -> tuple[Tensor, Tensor]:
    """Square images (N, C, H, W) turned by k quarter turns (k = 0, 1, 2, 3, counter-clockwise), as 4N images and
    their labels k: the self-supervised training set of the rotation classifier."""
    if images.shape[-1] != images.shape[-2]:
        raise GenzooError(f"The rotation classifier needs square images, and these are {images.shape[-2]}×"
                          f"{images.shape[-1]}: set callbacks.fidelity.extractor=inception.")
    turned = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])
    return turned, torch.arange(4).repeat_interleave(len(images))


def classifier_path(cache_dir: str | Path, dataset: str, data_hash: str, config: dict) -> Path:
    key = hashlib.sha256(json.dumps({"data": data_hash, **config}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "classifiers" / f"{dataset}-{key}.pt"


def accuracy(net: ClassifierNet, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(images[i:i + batch_size].float() / 255)[1].argmax(1)
                               for i in range(0, len(images), batch_size)])
    return (predicted.cpu() == labels.cpu()).float().mean().item()


def full_config(config: dict) -> dict:
    return {**DEFAULTS, **config}


def architecture(images: Tensor, num_classes: int, cfg: dict) -> dict:
    return {"in_channels": int(images.shape[1]), "size": int(min(images.shape[2:])), "num_classes": int(num_classes),
            "width": cfg["width"], "feature_dim": cfg["feature_dim"], "dropout": cfg["dropout"]}


def load_classifier(path: str | Path, arch: dict | None = None, config: dict | None = None) -> dict:
    """The state saved at ``path``, checked whole: ``DamagedClassifier`` says what is wrong with it. With ``arch``
    and ``config`` (full, see ``full_config``) it must also be the classifier they describe."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors each have their own class
        raise DamagedClassifier(path, f"not a readable torch file: {one_line(e)}") from None
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise DamagedClassifier(path, f"it holds {found}, not {', '.join(KEYS)}")
    if arch is not None and state["arch"] != arch:
        raise DamagedClassifier(path, f"its architecture is {state['arch']}, not {arch}")
    if config is not None and state["config"] != config:
        raise DamagedClassifier(path, f"it was trained with {state['config']}, not {config}")
    try:
        ClassifierNet(**state["arch"]).load_state_dict(state["state_dict"])
    except Exception as e:  # noqa: BLE001 - wrong keys or shapes (RuntimeError), a foreign arch (TypeError)
        raise DamagedClassifier(path, f"its weights do not fit its network: {one_line(e)}") from None
    if not all(torch.is_tensor(t) and torch.isfinite(t).all() for t in state["state_dict"].values()):
        raise DamagedClassifier(path, "some of its weights are not finite numbers")
    accuracy = state["test_accuracy"]
    if not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1 or math.isnan(accuracy):
        raise DamagedClassifier(path, f"its test accuracy {accuracy!r} is not a fraction")
    return state


def cached_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, config: dict,
                      path: Path, device="cpu") -> dict:
    """The classifier of these data and config: the cached file when it is whole and the one asked for, else
    trained (again, after one warning naming the damaged file) and saved there. Not collective: rank zero only."""
    cfg, path = full_config(config), Path(path)
    if path.exists():
        try:
            return load_classifier(path, architecture(train[0], num_classes, cfg), cfg)
        except DamagedClassifier as e:
            log.warning("The cached domain classifier %s is damaged (%s): training it again.", path, e.reason)
    return train_classifier(train, test, num_classes, config, path, device)


def state_hash(state: dict) -> str:
    """A hash of the classifier's architecture and weights: equal states give equal features."""
    digest = hashlib.sha256(json.dumps(state["arch"], sort_keys=True).encode())
    for name, tensor in sorted(state["state_dict"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, config: dict,
                     path: Path, device="cpu") -> dict:
    """Fit the classifier to ``train`` (uint8 0…255 images, labels) on ``device``; save weights (on the CPU),
    config and test accuracy (where the cache folder refuses the file, one warning, and the state is still
    returned)."""
    images, labels, path = *train, Path(path)
    cfg = full_config(config)
    arch = architecture(images, num_classes, cfg)
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
    # atomic: a crash never leaves half a classifier for the next run to load
    save_to_cache(state, path, path.parent.parent, "The domain classifier")  # {cache_dir}/classifiers/…
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

    def __init__(self, name, features_list, feature_extractor_weights_path=None, state: dict | None = None,
                 **kwargs):
        """``state``: an already checked classifier state (``cached_classifier``), used instead of the file."""
        super().__init__(name, features_list)
        if state is None:
            if feature_extractor_weights_path is None:
                raise ValueError(f"{NAME} needs feature_extractor_weights_path: the cached classifier file.")
            state = load_classifier(feature_extractor_weights_path)
        self.arch = dict(state["arch"])
        self.net = ClassifierNet(**self.arch)
        self.net.load_state_dict(state["state_dict"])
        self.test_accuracy = float(state["test_accuracy"])
        self.weights_hash = state_hash(state)  # the same whether the state came from the file or from rank zero
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
