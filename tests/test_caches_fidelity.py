"""The fidelity caches heal: a damaged domain classifier is trained again (and equals a clean one, trained with
the same seed), damaged reference statistics are computed again, damaged Inception weights are downloaded again or
named in the missing-weights sentence; each after one warning line naming the file, and a training run with a
damaged classifier in ``paths.cache_dir`` still ends with its test metrics. A cache folder that refuses the
files only warns. Damage: cut short, emptied, random bytes, or a well-formed file with the wrong contents."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from damage import BYTES, damage, the_one_warning
from omegaconf import OmegaConf
from test_fidelity import TINY, digits  # noqa: F401 - the fixture, shared
from test_fidelity import CountingSampler as RandomDigits  # a stand-in model drawing uniform digits

from genzoo.callbacks import Fidelity
from genzoo.data import DigitsDataModule
from genzoo.evaluation import cache, classifier, features, inception

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


# ---- the domain classifier ---------------------------------------------------------------------------------------
# TINY (the small classifier's config) and the digits fixture are test_fidelity's.


def classifier_inputs(dm):
    train, test = dm.splits["train"], dm.splits["test"]
    return (features.to_uint8(train.images, 17), train.labels), (features.to_uint8(test.images, 17), test.labels)


def classifier_file(dm, cache_dir: Path) -> Path:
    return classifier.classifier_path(cache_dir, "digits", features.tensor_hash(dm.splits["train"].images), TINY)


@pytest.fixture(scope="module")
def clean_classifier(digits, tmp_path_factory):
    """(path, state) of a classifier trained once in a clean cache."""
    path = classifier_file(digits, tmp_path_factory.mktemp("clean"))
    return path, classifier.cached_classifier(*classifier_inputs(digits), 10, TINY, path)


def rewrite_classifier(path: Path, kind: str) -> None:
    state = torch.load(path, weights_only=True)
    if kind == "wrong keys":
        torch.save({"weights": state["state_dict"]}, path)
    elif kind == "wrong arch":  # a whole classifier of another width
        arch = {**state["arch"], "width": 4}
        torch.save({**state, "arch": arch, "state_dict": classifier.ClassifierNet(**arch).state_dict()}, path)
    elif kind == "wrong shapes":
        name = next(iter(state["state_dict"]))
        torch.save({**state, "state_dict": {**state["state_dict"], name: torch.zeros(3)}}, path)
    elif kind == "not finite":
        name = next(iter(state["state_dict"]))
        torch.save({**state, "state_dict": {**state["state_dict"], name: state["state_dict"][name] * torch.nan}}, path)
    else:
        damage(path, kind)


@pytest.mark.parametrize("kind", [*BYTES, "wrong keys", "wrong arch", "wrong shapes", "not finite"])
def test_a_damaged_classifier_is_trained_again_after_one_warning_and_equals_a_clean_one(digits, clean_classifier,
                                                                                       tmp_path, caplog, kind):
    clean_path, clean = clean_classifier
    path = classifier_file(digits, tmp_path)
    path.parent.mkdir(parents=True)
    shutil.copy(clean_path, path)
    rewrite_classifier(path, kind)
    state = classifier.cached_classifier(*classifier_inputs(digits), 10, TINY, path)
    assert "training it again" in the_one_warning(caplog, path)
    on_disk = classifier.load_classifier(path, clean["arch"], clean["config"])  # whole again
    for healed in (state, on_disk):
        assert healed["test_accuracy"] == clean["test_accuracy"]
        assert all(torch.equal(healed["state_dict"][k], v) for k, v in clean["state_dict"].items())


def test_a_whole_classifier_file_is_loaded_not_trained_again(digits, clean_classifier, caplog):
    path, clean = clean_classifier
    with caplog.at_level(logging.INFO, logger="genzoo.evaluation.classifier"):
        state = classifier.cached_classifier(*classifier_inputs(digits), 10, TINY, path)
    assert not any("Training" in r.getMessage() for r in caplog.records)
    assert classifier.state_hash(state) == classifier.state_hash(clean)


class OneProcess:
    """What the callback asks of a trainer, for one process."""

    is_global_zero, global_rank, world_size = True, 0, 1

    class strategy:  # noqa: N801 - stands in for trainer.strategy
        broadcast = staticmethod(lambda obj, src=0: obj)
        barrier = staticmethod(lambda name=None: None)

    def __init__(self, datamodule):
        self.datamodule = datamodule


def test_the_fidelity_callback_gives_its_metrics_with_a_damaged_classifier_in_the_cache(digits, clean_classifier,
                                                                                         tmp_path, caplog):
    path = classifier_file(digits, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 100)
    results = Fidelity(cache_dir=str(tmp_path), classifier_config=TINY, kid_subsets=5).compute(
        OneProcess(digits), RandomDigits(), "test")
    the_one_warning(caplog, path)
    assert results["classifier_acc"] == clean_classifier[1]["test_accuracy"]
    assert all(np.isfinite(results[k]) for k in ("fid", "is", "kid", "precision", "recall", "fid_floor"))


# ---- reference statistics ----------------------------------------------------------------------------------------
def rewrite_reference(path: Path, kind: str) -> None:
    stats = torch.load(path, weights_only=True)
    if kind == "too few rows":  # a whole file, but of another n
        torch.save({k: v[:10] if k in ("features", "logits") else v for k, v in stats.items()}, path)
    elif kind == "wrong keys":
        torch.save({"mu": stats["mu"]}, path)
    else:
        damage(path, kind)


@pytest.mark.parametrize("kind", [*BYTES, "too few rows", "wrong keys"])
def test_damaged_reference_statistics_are_computed_again_after_one_warning(digits, clean_classifier, tmp_path,
                                                                            caplog, kind):
    extractor = features.build_extractor("classifier", clean_classifier[0])
    images = digits.splits["test"].images
    clean = cache.reference(extractor, tmp_path, "digits", "test", images, 17, n=100, batch_size=50)
    (path,) = (tmp_path / "fidelity").glob("*.pt")
    rewrite_reference(path, kind)
    calls = extractor.calls
    healed = cache.reference(extractor, tmp_path, "digits", "test", images, 17, n=100, batch_size=50)
    assert "computing them again" in the_one_warning(caplog, path)
    assert extractor.calls > calls, "the damaged statistics were served"
    on_disk = cache.checked(torch.load(path, weights_only=True), 100)  # whole again
    for stats in (healed, on_disk):
        assert all(torch.equal(stats[k], clean[k]) for k in ("features", "logits", "mu", "sigma"))


# ---- Inception weights -------------------------------------------------------------------------------------------
@pytest.fixture
def weights(tmp_path, monkeypatch):
    """(the cached weights file, its good bytes): a small torch file stands in for torch-fidelity's 91 MB, with
    the sha256 prefix its name would carry; ``torch.hub`` downloads serve these bytes."""
    good_file = tmp_path / "good.pth"
    torch.save({"conv.weight": torch.randn(4, 3)}, good_file)
    good = good_file.read_bytes()
    monkeypatch.setattr(inception, "SHA256_PREFIX", hashlib.sha256(good).hexdigest()[:8])

    def download(url, dst, hash_prefix=None, progress=True):
        assert hash_prefix == inception.SHA256_PREFIX, "the download is not checked"
        Path(dst + ".partial").write_bytes(good)
        Path(dst + ".partial").replace(dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    target = tmp_path / "cache" / "torch_fidelity" / inception.WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(good)
    return target, good


def rewrite_weights(path: Path, kind: str) -> None:
    if kind == "wrong contents":  # a whole torch file, but not these weights
        torch.save({"conv.weight": torch.zeros(4, 3)}, path)
    else:
        damage(path, kind)


@pytest.mark.parametrize("kind", [*BYTES, "wrong contents"])
def test_damaged_inception_weights_are_downloaded_again_after_one_warning(weights, caplog, kind):
    target, good = weights
    cache_dir = target.parent.parent
    assert inception.inception_weights(cache_dir, download=False) == target  # whole: no warning, no download
    assert not caplog.records
    rewrite_weights(target, kind)
    assert inception.inception_weights(cache_dir, download=True) == target
    assert "downloaded them again" in the_one_warning(caplog, target)
    assert target.read_bytes() == good


@pytest.mark.parametrize("kind", ["truncated", "wrong contents"])
def test_damaged_inception_weights_that_cannot_be_downloaded_are_named_in_one_sentence(weights, kind):
    target, _ = weights
    rewrite_weights(target, kind)
    with pytest.raises(inception.InceptionWeightsMissing) as e:
        inception.inception_weights(target.parent.parent, download=False)
    message = str(e.value)
    assert str(target) in message and "damaged" in message and "put it there" in message and "\n" not in message
    # in a training run the same sentence is the one warning, and the run goes on without the metrics
    callback = Fidelity(cache_dir=str(target.parent.parent), extractor="inception", download=False)
    with pytest.warns(UserWarning, match="damaged") as record:
        assert callback.compute(OneProcess(DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10)),
                                RandomDigits(), "test") is None
    assert len(record) == 1 and str(target) in str(record[0].message)


# ---- a cache folder that refuses the files -----------------------------------------------------------------------
def test_a_read_only_cache_folder_warns_once_and_the_metrics_are_still_computed(digits, clean_classifier, tmp_path,
                                                                                 caplog, monkeypatch):
    from genzoo import files

    def refuse(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files, "save_atomically", refuse)
    results = Fidelity(cache_dir=str(tmp_path), classifier_config=TINY, kid_subsets=5).compute(
        OneProcess(digits), RandomDigits(), "test")
    message = the_one_warning(caplog, tmp_path)  # the classifier and both references: one warning
    assert f"paths.cache_dir={tmp_path} writable" in message
    assert results["classifier_acc"] == clean_classifier[1]["test_accuracy"]
    assert not list(tmp_path.rglob("*.pt"))


# ---- end to end: a training run with a damaged classifier in the cache -------------------------------------------
@pytest.mark.slow
def test_a_training_run_with_a_damaged_classifier_file_ends_with_its_test_metrics(cli, digits, tmp_path):
    smoke = OmegaConf.load(REPO / "conf/debug/smoke.yaml").callbacks.fidelity.classifier_config
    config = OmegaConf.to_container(smoke)
    path = classifier.classifier_path(tmp_path / "cache", "digits",
                                      features.tensor_hash(digits.splits["train"].images), config)
    path.parent.mkdir(parents=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    run = cli.train("debug=smoke", "logger=csv", "model.net.channels=8", "model.net.blocks=1",
                    "model.net.head_channels=16", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output, run.tail()
    warnings = [line for line in run.output.splitlines() if "WARNING" in line and str(path) in line]
    assert len(warnings) == 1 and "is damaged" in warnings[0], run.tail()
    metrics = json.loads((run.run_dir() / "metrics.json").read_text())
    for key in ("test/fid", "test/is", "test/kid", "test/precision", "test/recall", "test/fid_floor"):
        assert math.isfinite(metrics[key]), key
    healed = classifier.load_classifier(path)  # whole on disk again
    assert metrics["test/classifier_acc"] == pytest.approx(healed["test_accuracy"])
