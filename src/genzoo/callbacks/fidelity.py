"""FID, IS, KID and precision/recall of a model's samples against a split of its data, at test (default) and
every N epochs at validation when asked.

Logged as ``{val,test}/fid``, ``/is``, ``/kid``, ``/precision``, ``/recall``; beside them ``/fid_floor`` (FID of
n training images against the same n reference images: what a perfect model would score at this n) and, with the
domain classifier, ``/classifier_acc`` (its test accuracy: the features are only as good as the classifier).
On data without labels the classifier is the rotation classifier (``genzoo.evaluation.classifier``): FID, KID,
precision/recall and its accuracy at telling quarter turns apart, but no IS.
The reference split is the stage's own (val or test), or with ``reference=train`` the training images at both stages
(the protocol of most GAN tables, and the one that works where the held-out split is a different region of the
data, as on the patches; no floor then); n defaults to the reference's size (180 on the digits). For a
class-conditional model on labelled data (``model.conditional``), also FID per class and its mean,
``/fid_class/{c}``, ``/intra_fid`` and ``/intra_fid_floor`` (``genzoo.evaluation.per_class``).

Beside the numbers, the protocol they were measured with (``genzoo.evaluation.protocol``): extractor and weights
hash, number of generated images, reference split and its size. It goes to ``metrics.json`` (through
``MetricsFile``, which collects every callback's ``records``) and to the W&B run's summary as
``{stage}/fidelity_protocol``.

At validation the metrics exist only on the epochs they are computed: the values of an earlier epoch are taken out of
the trainer's metrics at the start of each validation, so ``metrics.jsonl`` holds ``val/fid`` on those epochs alone
and a monitor never sees a stale one (``genzoo.run.selection`` aligns the checkpoints with them).

Under DDP every rank samples and extracts its share and the features are gathered (``evaluation.features``);
rank zero alone computes the reference features (cached), loads the cached classifier or trains it when none is
cached or the file is damaged (and broadcasts its weights), writes files and computes the metrics, which it then
broadcasts, so every rank logs the same values and every collective is reached by all ranks. The methods and what
they leave out: ``genzoo.evaluation.metrics``.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from genzoo.errors import GenzooError
from genzoo.evaluation import cache, classifier, features, inception, per_class, protocol
from genzoo.evaluation.metrics import fid, fidelity_metrics

log = logging.getLogger(__name__)
EXTRACTORS = ("classifier", "inception")


class Fidelity(pl.Callback):
    def __init__(self, cache_dir: str, extractor: str = "classifier", n: int | None = None, at_test: bool = True,
                 every_n_epochs: int | None = 0, batch_size: int = 64, seed: int = 0, kid_subsets: int = 100,
                 isc_splits: int = 10, floor: bool = True, inception_weights: str | None = None,
                 download: bool = True, strict: bool = False, classifier_config: dict | None = None,
                 per_class: bool = True, n_per_class: int | None = None, reference: str | None = None):
        if extractor not in EXTRACTORS:
            raise GenzooError(f"fidelity extractor={extractor!r} is unknown: use one of {', '.join(EXTRACTORS)}.")
        if n is not None and int(n) < 2:
            raise GenzooError(f"fidelity n={n} is too few samples for a covariance: give n ≥ 2 (or null).")
        self.cache_dir, self.kind, self.n = Path(cache_dir), extractor, None if n is None else int(n)
        self.at_test, self.every_n_epochs, self.batch_size = bool(at_test), int(every_n_epochs or 0), int(batch_size)
        self.seed, self.kid_subsets, self.isc_splits, self.floor = int(seed), int(kid_subsets), int(isc_splits), floor
        self.inception_weights, self.download, self.strict = inception_weights, bool(download), bool(strict)
        self.classifier_config = dict(classifier_config or {})
        self.per_class, self.n_per_class = bool(per_class), None if n_per_class is None else int(n_per_class)
        if reference not in (None, "train"):
            raise GenzooError(f"fidelity reference={reference!r} is not a reference genzoo knows: use null (each stage's "
                              "own split) or train.")
        self.reference = reference
        self.records: dict[str, dict] = {}  # {stage}/fidelity_protocol → the protocol, for metrics.json
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
        train, test = dm.splits["train"], dm.splits["test"]
        name, dataset = classifier.NAME, dm.NAME or type(dm).__name__
        images = features.to_uint8(train.images, dm.levels), features.to_uint8(test.images, dm.levels)
        if getattr(dm, "num_classes", 0) > 0:
            sets, classes = ((images[0], train.labels), (images[1], test.labels)), dm.num_classes
        else:  # no labels: the classifier of quarter turns (classifier.rotations), on square images only
            h, w = train.images.shape[-2:]
            if h != w:
                self._skip(f"the data have no class labels and their images are {h}×{w}, not square, so neither "
                           "a domain classifier nor a rotation classifier can be trained: set "
                           "callbacks.fidelity.extractor=inception.")
                return None
            sets, classes = (classifier.rotations(images[0]), classifier.rotations(images[1])), 4
            name, dataset = classifier.ROTATION_NAME, f"{dataset}-rotation"
        path = classifier.classifier_path(self.cache_dir, dataset, features.tensor_hash(train.images),
                                          self.classifier_config)
        state = None
        if trainer.is_global_zero:  # loads the cached file, or trains it where it is missing or damaged
            state = classifier.cached_classifier(*sets, classes, self.classifier_config, path, device)
        # Every rank uses the state rank zero checked, not its own read of the file: no rank can load a file that
        # was damaged, is being replaced, could not be written (a read-only cache) or is on another node's disk.
        state = trainer.strategy.broadcast(state, src=0)
        # A classifier no better than guessing has features that tell no samples apart: every FID would look good.
        accuracy, chance, n_test = state["test_accuracy"], 1.0 / classes, len(sets[1][1])
        if accuracy <= chance + 3 * math.sqrt(chance * (1 - chance) / n_test):
            what = "quarter turns" if name == classifier.ROTATION_NAME else "classes"
            self._skip(f"the {name} tells the {what} of {n_test} test images apart no better than chance (accuracy "
                       f"{accuracy:.3f}, chance {chance:.3f}), so its features cannot judge samples: set "
                       "callbacks.fidelity.extractor=inception.")
            return None
        return features.build_extractor("classifier", path, state=state, name=name)

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
    def classes(self, dm, pl_module, split: str) -> list[tuple[int, int]]:
        """(class, n_c) to score one by one: a conditional model on labelled data, else none."""
        if not (self.per_class and getattr(pl_module, "conditional", False) and getattr(dm, "num_classes", 0)):
            return []
        return per_class.class_sizes(dm.splits[split].labels, dm.num_classes, self.n_per_class)

    def compute(self, trainer: pl.Trainer, pl_module, split: str) -> dict[str, float] | None:
        """The metrics against ``split`` (val or test). Collective under DDP: every rank calls it."""
        extractor = self.get_extractor(trainer, pl_module)
        if extractor is None:
            return None
        dm, device = trainer.datamodule, pl_module.device
        against = self.reference or split  # the stage's own split, or the training images (reference=train)
        floor = self.floor and against != "train"  # training images against themselves would score 0
        real = dm.splits[against].images
        n = self.n or len(real)

        def draw(count: int, seed: int, label: int | None = None):
            return features.generated_features(
                pl_module, extractor, count, self.batch_size, seed, trainer.global_rank, trainer.world_size,
                all_gather=lambda t: trainer.strategy.all_gather(t), device=device, label=label)

        # Against one reference at both stages, the test samples are drawn afresh: the same draws would make
        # test/fid the very val/fid the checkpoint was chosen by.
        generated = draw(n, self.seed + 1 if self.reference and split == "test" else self.seed)
        sizes = self.classes(dm, pl_module, against)
        by_class = {c: draw(k, per_class.class_seed(self.seed, c), c) for c, k in sizes}  # every rank, same order
        results = record = None
        if trainer.is_global_zero:
            name, levels = dm.NAME or type(dm).__name__, dm.levels
            reference = cache.reference(extractor, self.cache_dir, name, against, real, levels, n, self.batch_size,
                                        device)
            results = fidelity_metrics(generated, reference, self.seed, self.kid_subsets, self.isc_splits)
            if extractor.name == classifier.ROTATION_NAME:  # its classes are turns, not contents: no IS
                results.pop("is")
            train = dm.splits["train"]
            if floor:
                train_reference = cache.reference(extractor, self.cache_dir, name, "train", train.images, levels,
                                                  min(n, len(real)), self.batch_size, device)
                results["fid_floor"] = fid(train_reference, reference)
            if by_class:
                results.update(per_class.intra_class_fid(
                    by_class, extractor, self.cache_dir, name, against, real, dm.splits[against].labels,
                    train.images, train.labels, levels, self.batch_size, device, floor))
            if extractor.accuracy is not None:
                results["classifier_acc"] = extractor.accuracy
            classes = {"classes": len(sizes), "samples": "as many per class as the class's reference images"
                       + (f", at most {self.n_per_class}" if self.n_per_class else "")} if sizes else None
            record = protocol.record(extractor.name, extractor.digest, len(generated["features"]), name, against,
                                     len(reference["features"]), extractor.accuracy, classes)
            log.info("Fidelity (%s): %s", protocol.describe(record), {k: round(v, 4) for k, v in results.items()})
        results, record = trainer.strategy.broadcast((results, record), src=0)
        if record is not None:
            self.records[f"{split}/{protocol.SUFFIX}"] = record
        return results

    def _log(self, trainer: pl.Trainer, pl_module, split: str) -> None:
        results = self.compute(trainer, pl_module, split)
        if results is None:
            return
        self.last = {f"{split}/{k}": v for k, v in results.items()}
        for key, value in self.last.items():  # equal on every rank; the mean over ranks keeps them so
            pl_module.log(key, torch.tensor(value, dtype=torch.float32, device=pl_module.device), sync_dist=True)
        if trainer.is_global_zero:
            self._protocol_to_wandb(trainer, split)

    def _protocol_to_wandb(self, trainer: pl.Trainer, split: str) -> None:
        """The protocol as a mapping in the W&B run's summary, beside the numbers (a summary holds the latest value,
        which is what a protocol is; a history of identical mappings would be noise)."""
        key = f"{split}/{protocol.SUFFIX}"
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.summary[key] = self.records[key]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        # An earlier epoch's values would stay in the trainer's metrics until the next computation: metrics.jsonl
        # would repeat them, and a monitor could compare one stale value with another.
        if not trainer.sanity_checking:
            for key in [k for k in trainer.callback_metrics if k.startswith("val/") and k[4:] in self._keys()]:
                del trainer.callback_metrics[key]

    def _keys(self) -> set[str]:
        return {k.partition("/")[2] for k in self.last}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs > 0 and not trainer.sanity_checking and epoch % self.every_n_epochs == 0:
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.at_test:
            self._log(trainer, pl_module, "test")
