"""Linear probe: how useful is a frozen encoder's code as features for a small labelled set?

At test, for a model with an ``encode(x) -> (B, D)`` method (the autoencoder's code, the VAE's posterior mean),
fit a multinomial logistic regression on the features of 1 %, 10 % and 100 % of the training labels (seeded
subsets, stratified by class where the subset can hold every class) and report its accuracy on the test split,
as a fraction in [0, 1]:

    probe/acc_{1,10,100}pct          the model's encoder, frozen
    probe/raw_acc_{1,10,100}pct      raw pixels scaled to [-1, 1]
    probe/random_acc_{1,10,100}pct   a randomly initialised encoder of the same architecture (seeded)

Each classifier: features standardised by the labelled subset's mean and standard deviation, then

    min_{W, b}  (1/N) Σ_i −log softmax(W f_i + b)_{y_i} + ‖W‖² / (2·C·N)

(scikit-learn's ``LogisticRegression`` objective divided by N) by full-batch L-BFGS. The objective is convex, so
the answer depends on the seed only through the subsets. Under DDP rank 0 computes alone (no collective is
called) and logs with ``rank_zero_only``; the values reach the loggers and ``metrics.json``.
Left out: choosing C on held-out labels (one fixed C for every feature set keeps the comparison plain), and
subsampling very large training sets (every training image is encoded).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from sklearn.model_selection import train_test_split
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.nn.modes import evaluating

log = logging.getLogger(__name__)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``round(fraction·N)`` (at least 1) examples, stratified by class where possible."""
    n = len(labels)
    size = max(1, round(fraction * n))
    if size >= n:
        return np.arange(n)
    try:
        subset, _ = train_test_split(np.arange(n), train_size=size, stratify=labels, random_state=seed)
    except ValueError:  # fewer slots than classes, or a class with one example: a plain random subset
        subset = np.random.default_rng(seed).choice(n, size, replace=False)
    return np.sort(subset)


def fit_linear_probe(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, num_classes: int,
    C: float = 1.0, max_iter: int = 300,
) -> float:
    """Test accuracy of an L2-regularised multinomial logistic regression fitted to (features, labels)."""
    with torch.inference_mode(False), torch.enable_grad():  # Lightning tests under inference mode
        a, b = train_features.float().clone(), test_features.float().clone()
        y = train_labels.long().clone()
        mean, std = a.mean(0), a.std(0, unbiased=False)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features (a blank border) stay 0
        a, b = (a - mean) / std, (b - mean) / std
        weight = torch.zeros(a.shape[1], num_classes, device=a.device, requires_grad=True)
        bias = torch.zeros(num_classes, device=a.device, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(a @ weight + bias, y) + weight.pow(2).sum() / (2 * C * len(a))
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            predicted = (b @ weight + bias).argmax(1)
    return (predicted.cpu() == test_labels.cpu()).float().mean().item()


def probe_accuracies(
    features: dict[str, tuple[Tensor, Tensor]], train_labels: Tensor, test_labels: Tensor, num_classes: int,
    fractions=(0.01, 0.1, 1.0), seed: int = 0, C: float = 1.0, max_iter: int = 300,
) -> dict[str, float]:
    """``{prefix}acc_{p}pct`` for each feature set ``prefix → (train (N, D), test (M, D))`` and labelled fraction."""
    out = {}
    for fraction in fractions:
        subset = torch.as_tensor(stratified_subset(train_labels.cpu().numpy(), fraction, seed))
        for prefix, (train_f, test_f) in features.items():
            acc = fit_linear_probe(train_f[subset.to(train_f.device)], train_labels[subset], test_f, test_labels,
                                   num_classes, C, max_iter)
            out[f"probe/{prefix}acc_{fraction * 100:g}pct"] = acc
    return out


@torch.no_grad()
def encode_all(encode, images: Tensor, device: torch.device, batch_size: int) -> Tensor:
    """(N, D) features of uint8 images, encoded ``batch_size`` at a time."""
    return torch.cat([encode(images[i:i + batch_size].to(device)).float()
                      for i in range(0, len(images), batch_size)])


class LinearProbe(pl.Callback):
    def __init__(self, fractions=(0.01, 0.1, 1.0), seed: int = 0, C: float = 1.0, max_iter: int = 300,
                 batch_size: int = 512):
        self.fractions = tuple(float(f) for f in fractions)
        if not all(0 < f <= 1 for f in self.fractions):
            raise GenzooError(f"callbacks.linear_probe.fractions={list(fractions)} are not shares of the training "
                              "labels: give numbers in (0, 1], e.g. [0.01, 0.1, 1.0].")
        self.seed, self.C, self.max_iter, self.batch_size = int(seed), float(C), int(max_iter), int(batch_size)

    def random_encoder(self, pl_module: pl.LightningModule) -> pl.LightningModule:
        """A fresh copy of the model's architecture, initialised from ``seed`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fresh = type(pl_module)(**pl_module.hparams)
        return fresh.to(pl_module.device).eval()

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "encode") or not trainer.is_global_zero:
            return  # nothing below may call a collective: only rank 0 gets here
        datamodule = trainer.datamodule
        if getattr(pl_module, "conditional", False):
            log.info("LinearProbe: the encoder is told the label (model.conditional=true), so its code is no fair "
                     "feature for predicting it; no linear probe is fitted.")
            return
        if getattr(pl_module, "num_classes", 0) == 0:
            log.info("LinearProbe: the data has no class labels (num_classes=0), so no linear probe is fitted.")
            return
        if not hasattr(datamodule, "splits"):
            log.info("LinearProbe: the test ran without a genzoo datamodule, so no linear probe is fitted.")
            return
        if not datamodule.splits:
            datamodule.setup("test")
        train, test = datamodule.splits["train"], datamodule.splits["test"]
        device, size = pl_module.device, self.batch_size
        random_model = self.random_encoder(pl_module)
        with evaluating(pl_module):
            features = {
                prefix: tuple(encode_all(encode, split.images, device, size) for split in (train, test))
                for prefix, encode in (("", pl_module.encode), ("raw_", lambda x: pl_module.scale(x).flatten(1)),
                                       ("random_", random_model.encode))
            }
        results = probe_accuracies(features, train.labels.to(device), test.labels, pl_module.num_classes,
                                   self.fractions, self.seed, self.C, self.max_iter)
        # Lightning suggests sync_dist=True for every unsynced epoch-level value under DDP; here a sync would wait
        # for ranks that never log these keys, so silence that advice for them alone.
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('probe/",
                                category=PossibleUserWarning)
        for key, value in results.items():
            pl_module.log(key, value, rank_zero_only=True)
