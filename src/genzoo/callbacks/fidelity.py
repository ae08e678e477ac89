"""FID, IS, KID and precision/recall of a model's samples against a split of its data, at test (default) and
every N epochs at validation when asked.

Logged as ``{val,test}/fid``, ``/is``, ``/kid``, ``/precision``, ``/recall``; beside them ``/fid_floor`` (FID of
n training images against the same n reference images: what a perfect model would score at this n) and, with the
domain classifier, ``/classifier_acc`` (its test accuracy: the features are only as good as the classifier).
The reference split is the stage's own (val or test); n defaults to its size (180 on the digits).

Under DDP every rank samples and extracts its share and the features are gathered (``evaluation.features``);
rank zero alone computes the reference features (cached), loads the cached classifier or trains it when none is
cached or the file is damaged (and broadcasts its weights), writes files and computes the metrics, which it then
broadcasts, so every rank logs the same values and every collective is reached by all ranks. The methods and what
they leave out: ``genzoo.evaluation.metrics``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from genzoo.errors import GenzooError
from genzoo.evaluation import cache, classifier, features, inception
from genzoo.evaluation.metrics import fid, fidelity_metrics

log = logging.getLogger(__name__)
EXTRACTORS = ("classifier", "inception")


class Fidelity(pl.Callback):
    def __init__(self, cache_dir: str, extractor: str = "classifier", n: int | None = None, at_test: bool = True,
                 every_n_epochs: int = 0, batch_size: int = 64, seed: int = 0, kid_subsets: int = 100,
                 isc_splits: int = 10, floor: bool = True, inception_weights: str | None = None,
                 download: bool = True, strict: bool = False, classifier_config: dict | None = None):
        if extractor not in EXTRACTORS:
            raise GenzooError(f"fidelity extractor={extractor!r} is unknown: use one of {', '.join(EXTRACTORS)}.")
        if n is not None and int(n) < 2:
            raise GenzooError(f"fidelity n={n} is too few samples for a covariance: give n ≥ 2 (or null).")
        self.cache_dir, self.kind, self.n = Path(cache_dir), extractor, None if n is None else int(n)
        self.at_test, self.every_n_epochs, self.batch_size = bool(at_test), int(every_n_epochs or 0), int(batch_size)
        self.seed, self.kid_subsets, self.isc_splits, self.floor = int(seed), int(kid_subsets), int(isc_splits), floor
        self.inception_weights, self.download, self.strict = inception_weights, bool(download), bool(strict)
        self.classifier_config = dict(classifier_config or {})
        self.extractor: features.Extractor | None = None
        self.unavailable: str | None = None  # why no metric can be computed (warned once)
        self.last: dict[str, float] = {}

    # ---- the extractor, once per run ---------------------------------------------------------------------------
    def _skip(self, why: str) -> None:
        if self.strict:
            raise GenzooError(why)
        if self.unavailable is None:
            warnings.warn(f"Fidelity metrics are skipped: {why}", stacklevel=2)
        self.unavailable = why

    def _classifier(self, trainer: pl.Trainer, dm, device) -> features.Extractor | None:
        if getattr(dm, "num_classes", 0) == 0:
            self._skip("the data have no class labels, so no domain classifier can be trained: set "
                       "callbacks.fidelity.extractor=inception.")
            return None
        train, test = dm.splits["train"], dm.splits["test"]
        path = classifier.classifier_path(self.cache_dir, dm.NAME or type(dm).__name__,
                                          features.tensor_hash(train.images), self.classifier_config)
        state = None
        if trainer.is_global_zero:  # loads the cached file, or trains it where it is missing or damaged
            state = classifier.cached_classifier((features.to_uint8(train.images, dm.levels), train.labels),
                                                 (features.to_uint8(test.images, dm.levels), test.labels),
                                                 dm.num_classes, self.classifier_config, path, device)
        # Every rank uses the state rank zero checked, not its own read of the file: no rank can load a file that
        # was damaged, is being replaced, could not be written (a read-only cache) or is on another node's disk.
        state = trainer.strategy.broadcast(state, src=0)
        return features.build_extractor("classifier", path, state=state)

    def _inception_weights(self, trainer: pl.Trainer) -> Path | None:
        try:  # every rank looks on disk first, so all take the same branch
            return inception.inception_weights(self.cache_dir, self.inception_weights, download=False)
        except inception.InceptionWeightsMissing as e:
            missing = str(e)
        if self.download and not self.inception_weights:
            error = None
            if trainer.is_global_zero:
                try:
                    inception.inception_weights(self.cache_dir, None, download=True)
                except inception.InceptionWeightsMissing as e:
                    error = str(e)
            error = trainer.strategy.broadcast(error, src=0)
            if error is None:
                return inception.inception_weights(self.cache_dir, None, download=False)
            missing = error
        self._skip(missing)
        return None

    def get_extractor(self, trainer: pl.Trainer, pl_module) -> features.Extractor | None:
        if self.extractor is None and self.unavailable is None:
            dm = trainer.datamodule
            if not hasattr(dm, "splits"):
                self._skip("the run has no genzoo datamodule to take reference images from.")
                return None
            dm.setup("test")
            if self.kind == "classifier":
                self.extractor = self._classifier(trainer, dm, pl_module.device)
            else:
                weights = self._inception_weights(trainer)
                if weights is not None:
                    self.extractor = features.build_extractor(self.kind, weights)
        if self.extractor is not None:
            self.extractor.to(pl_module.device)
        return self.extractor

    # ---- the metrics -------------------------------------------------------------------------------------------
    def compute(self, trainer: pl.Trainer, pl_module, split: str) -> dict[str, float] | None:
        """The metrics against ``split`` (val or test). Collective under DDP: every rank calls it."""
        extractor = self.get_extractor(trainer, pl_module)
        if extractor is None:
            return None
        dm, device = trainer.datamodule, pl_module.device
        real = dm.splits[split].images
        n = self.n or len(real)
        generated = features.generated_features(
            pl_module, extractor, n, self.batch_size, self.seed, trainer.global_rank, trainer.world_size,
            all_gather=lambda t: trainer.strategy.all_gather(t), device=device)
        results = None
        if trainer.is_global_zero:
            name, levels = dm.NAME or type(dm).__name__, dm.levels
            reference = cache.reference(extractor, self.cache_dir, name, split, real, levels, n, self.batch_size,
                                        device)
            results = fidelity_metrics(generated, reference, self.seed, self.kid_subsets, self.isc_splits)
            if self.floor:
                train = cache.reference(extractor, self.cache_dir, name, "train", dm.splits["train"].images,
                                        levels, min(n, len(real)), self.batch_size, device)
                results["fid_floor"] = fid(train, reference)
            if extractor.accuracy is not None:
                results["classifier_acc"] = extractor.accuracy
            log.info("Fidelity (%s, n=%d generated vs %d %s images): %s", extractor.name, len(generated["features"]),
                     len(reference["features"]), split, {k: round(v, 4) for k, v in results.items()})
        return trainer.strategy.broadcast(results, src=0)

    def _log(self, trainer: pl.Trainer, pl_module, split: str) -> None:
        results = self.compute(trainer, pl_module, split)
        if results is None:
            return
        self.last = {f"{split}/{k}": v for k, v in results.items()}
        for key, value in self.last.items():  # equal on every rank; the mean over ranks keeps them so
            pl_module.log(key, torch.tensor(value, dtype=torch.float32, device=pl_module.device), sync_dist=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs > 0 and not trainer.sanity_checking and epoch % self.every_n_epochs == 0:
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.at_test:
            self._log(trainer, pl_module, "test")
