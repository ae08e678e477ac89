"""The fidelity metrics in-process: their defining properties, the cross-checks against torch-fidelity and
torchmetrics on the same images and extractor, the reference cache and sampling that does not depend on the
number of processes. A tiny domain classifier (one epoch) stands in for a good one: the checks compare
pipelines, not its quality."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from genzoo.data import DigitsDataModule
from genzoo.errors import GenzooError
from genzoo.evaluation import cache, classifier, features
from genzoo.evaluation.metrics import fid, fidelity_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"epochs": 2, "width": 8, "feature_dim": 16}  # test accuracy 0.34 on the digits: weak, above chance


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10)
    dm.setup()
    return dm


def train_tiny(dm, folder, **config):
    config = {**TINY, **config}
    train, test = dm.splits["train"], dm.splits["test"]
    path = classifier.classifier_path(folder, "digits", features.tensor_hash(train.images), config)
    if not path.is_file():
        classifier.train_classifier((features.to_uint8(train.images, 17), train.labels),
                                    (features.to_uint8(test.images, 17), test.labels), 10, config, path)
    return path


@pytest.fixture(scope="module")
def extractor(digits, tmp_path_factory):
    return features.build_extractor("classifier", train_tiny(digits, tmp_path_factory.mktemp("classifier")))


def test_classifier_extractor_gives_its_features_for_its_own_dummy_input(extractor):
    dummy = extractor.module.get_dummy_input_for_compile()
    assert dummy.dtype == torch.uint8 and dummy.shape == (1, 1, 8, 8)
    feats, logits = extractor.module(dummy)
    assert feats.shape == (1, extractor.module.num_features) and logits.shape == (1, 10)


def gaussian_features(n, d=16, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"features": torch.randn(n, d, generator=g) + shift, "logits": torch.randn(n, 10, generator=g)}


def close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-6)


# ---- what the metrics mean -----------------------------------------------------------------------------------
def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = gaussian_features(300)["features"], gaussian_features(300, shift=0.5, seed=1)["features"]
    sa, sb = cache.statistics(a), cache.statistics(b)
    assert abs(fid(sa, sa)) < 1e-6
    assert fid(sa, sb) > 1.0
    assert close(fid(sa, sb), fid(sb, sa), 1e-6)


def test_kid_is_near_zero_for_two_halves_of_one_set_and_grows_with_a_shift():
    whole = gaussian_features(600)
    halves = [{k: v[i::2] for k, v in whole.items()} for i in (0, 1)]
    assert abs(fidelity_metrics(*halves, kid_subsets=20)["kid"]) < 0.02
    assert fidelity_metrics(gaussian_features(300, shift=1.0, seed=2), halves[0], kid_subsets=20)["kid"] > 0.1


def test_inception_score_of_one_repeated_image_is_one_and_of_confident_distinct_classes_is_their_number():
    real = gaussian_features(100)
    repeated = {"features": real["features"], "logits": real["logits"][:1].repeat(100, 1)}
    assert close(fidelity_metrics(repeated, real)["is"], 1.0, 1e-6)
    confident = {"features": real["features"], "logits": 50.0 * torch.eye(10).repeat(10, 1)}
    assert close(fidelity_metrics(confident, real, isc_splits=1)["is"], 10.0)


def test_kid_subset_size_never_exceeds_n():
    small = [gaussian_features(12, seed=s) for s in (0, 1)]
    assert math.isfinite(fidelity_metrics(*small, isc_splits=10)["kid"])


# ---- the same numbers as torch-fidelity and torchmetrics ---------------------------------------------------------
def test_metrics_equal_torch_fidelity_calculate_metrics_with_the_same_extractor(digits, extractor):
    import torch_fidelity

    fake, real = digits.splits["val"].images, digits.splits["test"].images
    ours = fidelity_metrics(features.extract(extractor, fake, 17), features.extract(extractor, real, 17), seed=7)
    theirs = torch_fidelity.calculate_metrics(
        input1=features.BareTensors(features.to_uint8(fake, 17)),
        input2=features.BareTensors(features.to_uint8(real, 17)),
        cuda=False, isc=True, fid=True, kid=True, prc=True, feature_extractor=classifier.NAME,
        feature_extractor_weights_path=str(extractor.weights_path), kid_subset_size=len(real), rng_seed=7,
        cache=False, verbose=False, save_cpu_ram=True)
    assert close(ours["fid"], theirs["frechet_inception_distance"])
    assert close(ours["is"], theirs["inception_score_mean"])
    assert close(ours["kid"], theirs["kernel_inception_distance_mean"])
    assert close(ours["precision"], theirs["precision"]) and close(ours["recall"], theirs["recall"])


class FeaturesOnly(torch.nn.Module):
    """The extractor's FID features as one tensor, the interface torchmetrics expects of ``feature=``."""

    def __init__(self, module):
        super().__init__()
        self.module, self.num_features = module, module.num_features

    def forward(self, x):
        return self.module(x)[0]


def test_fid_equals_torchmetrics_frechet_inception_distance_with_the_same_module(digits, extractor):
    from torchmetrics.image.fid import FrechetInceptionDistance

    fake, real = digits.splits["val"].images, digits.splits["test"].images
    metric = FrechetInceptionDistance(feature=FeaturesOnly(extractor.module))
    metric.update(features.to_uint8(real, 17), real=True)
    metric.update(features.to_uint8(fake, 17), real=False)
    ours = fid(cache.statistics(features.extract(extractor, fake, 17)["features"]),
               cache.statistics(features.extract(extractor, real, 17)["features"]))
    assert close(ours, float(metric.compute()))


# ---- the reference cache -----------------------------------------------------------------------------------------
def test_reference_statistics_are_loaded_the_second_time_and_rekeyed_by_n_and_extractor(digits, extractor, tmp_path):
    images = digits.splits["test"].images
    first = cache.reference(extractor, tmp_path, "digits", "test", images, 17, n=100, batch_size=50)
    calls = extractor.calls
    again = cache.reference(extractor, tmp_path, "digits", "test", images, 17, n=100, batch_size=50)
    assert extractor.calls == calls, "the second evaluation recomputed the reference features"
    assert torch.equal(first["mu"], again["mu"]) and len(again["features"]) == 100

    cache.reference(extractor, tmp_path, "digits", "test", images, 17, n=120, batch_size=50)
    assert extractor.calls > calls, "a new n reused the features of another n"
    other = features.build_extractor("classifier", train_tiny(digits, tmp_path, seed=1))
    cache.reference(other, tmp_path, "digits", "test", images, 17, n=100, batch_size=50)
    assert other.calls > 0, "another extractor's weights reused this extractor's statistics"
    assert len(list((tmp_path / "fidelity").glob("*.pt"))) == 3


# ---- sampling: the same images whatever the number of processes -------------------------------------------------
class CountingSampler(torch.nn.Module):
    """A stand-in model: ``sample`` draws from the global RNG, as genzoo's models do."""

    levels, shape = 17, (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.p.device

    def sample(self, n):
        return torch.randint(0, self.levels, (n, *self.shape))


def test_each_rank_draws_its_chunks_and_together_they_are_the_single_process_samples():
    model = CountingSampler()
    single, index = features.sample_chunks(model, 70, 16, seed=3)
    shares = [features.sample_chunks(model, 70, 16, seed=3, rank=r, world=3) for r in range(3)]
    images = torch.cat([s[0] for s in shares])
    order = torch.sort(torch.cat([s[1] for s in shares]), stable=True).indices
    assert torch.equal(images[order], single) and len(single) == 70
    assert torch.equal(index, torch.arange(70) // 16)


def test_uint8_conversion_keeps_every_level_distinct():
    x = torch.arange(17).reshape(1, 1, 1, 17)
    y = features.to_uint8(x, 17)
    assert y.dtype == torch.uint8 and y.unique().numel() == 17 and int(y.max()) == 255 and int(y.min()) == 0


# ---- no Inception weights offline ---------------------------------------------------------------------------------
class OneProcess:
    """What the callback asks of a trainer to find its extractor, for one process."""

    is_global_zero, global_rank, world_size = True, 0, 1

    def __init__(self, datamodule):
        self.datamodule = datamodule


def test_a_training_run_without_inception_weights_warns_once_and_goes_on(digits, tmp_path):
    from genzoo.callbacks import Fidelity

    callback = Fidelity(cache_dir=str(tmp_path), extractor="inception", download=False)
    model = CountingSampler()
    with pytest.warns(UserWarning, match="weights-inception-2015-12-05-6726825d.pth") as record:
        assert callback.compute(OneProcess(digits), model, "test") is None
        assert callback.compute(OneProcess(digits), model, "test") is None
    assert len(record) == 1
    strict = Fidelity(cache_dir=str(tmp_path), extractor="inception", download=False, strict=True)
    with pytest.raises(GenzooError, match="put it there"):
        strict.compute(OneProcess(digits), model, "test")


def test_inception_extractor_takes_grey_digits_and_gives_pool_features_and_logits(digits, tmp_path, monkeypatch):
    """Wiring only: random weights stand in for torch-fidelity's file, which is not on this machine."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    from genzoo.evaluation import inception

    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
    monkeypatch.setattr(tfi.torch, "load", lambda *a, **k: {})
    random_weights = inception.InceptionExtractor(inception.NAME, ["2048"], "unused").state_dict()
    monkeypatch.undo()
    path = tmp_path / inception.WEIGHTS_FILE
    torch.save(random_weights, path)
    assert inception.inception_weights(tmp_path, str(path)) == path
    extractor = features.build_extractor("inception", path)
    out = features.extract(extractor, digits.splits["test"].images[:2], 17)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["features"]).all()


# ---- intra-class FID ------------------------------------------------------------------------------------------------
class ClassSampler(torch.nn.Module):
    """A stand-in conditional model whose samples are training images: of class y, or of class y+1 with ``swap`` —
    the same images overall, each of the wrong class."""

    levels, shape, conditional = 17, (1, 8, 8), True

    def __init__(self, split, swap: bool = False):
        super().__init__()
        self.images, self.labels, self.swap = split.images, split.labels, swap
        self.p = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.p.device

    def sample(self, n, y=None):
        y = torch.randint(10, (n,)) if y is None else y.cpu()
        pools = [self.images[self.labels == (c + self.swap) % 10] for c in y.tolist()]
        return torch.stack([pool[torch.randint(len(pool), ())] for pool in pools]).long()


class Broadcast:
    def broadcast(self, obj, src=0):
        return obj

    def all_gather(self, tensor):
        return tensor[None]


class OneProcessTrainer(OneProcess):
    strategy = Broadcast()


def test_intra_class_fid_is_near_its_floor_for_the_right_classes_and_large_for_swapped_ones(digits, extractor, tmp_path):
    from genzoo.callbacks import Fidelity

    def scored(model):
        callback = Fidelity(cache_dir=str(tmp_path), seed=0)
        callback.extractor = extractor  # the tiny classifier of this module, not one trained here
        torch.manual_seed(0)
        return callback.compute(OneProcessTrainer(digits), model, "test"), callback.records["test/fidelity_protocol"]

    honest, protocol = scored(ClassSampler(digits.splits["train"]))
    swapped, _ = scored(ClassSampler(digits.splits["train"], swap=True))
    assert sorted(k for k in honest if k.startswith("fid_class/")) == [f"fid_class/{c}" for c in range(10)]
    assert honest["intra_fid"] == pytest.approx(sum(honest[f"fid_class/{c}"] for c in range(10)) / 10)
    assert honest["intra_fid"] < 1.5 * honest["intra_fid_floor"]
    assert swapped["intra_fid"] > 5 * honest["intra_fid"]
    assert swapped["fid"] < 1.5 * honest["fid"] + 1, "overall, the swapped samples are as good: only intra-FID sees it"
    assert protocol["per_class"]["classes"] == 10
    references = {p.name.split("-n")[0] for p in (tmp_path / "fidelity").glob("digits-*-class[0-9]*.pt")}
    assert references == {f"digits-{split}-class{c}" for split in ("test", "train") for c in range(10)}

    unconditional = ClassSampler(digits.splits["train"])
    unconditional.conditional = False
    plain, _ = scored(unconditional)
    assert not any(k.startswith(("fid_class/", "intra_fid")) for k in plain)


# ---- data without labels: the rotation classifier ----------------------------------------------------------------
def test_rotations_turn_each_image_by_its_label_in_quarter_turns():
    images = torch.arange(2 * 9).reshape(2, 1, 3, 3)
    turned, labels = classifier.rotations(images)
    assert turned.shape == (8, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[:2], images)
    assert turned[2, 0, 0].tolist() == images[0, 0, :, 2].tolist(), "one turn counter-clockwise: last column on top"
    assert torch.equal(turned[4], images[0].flip(-1, -2))
    with pytest.raises(GenzooError, match="needs square images, and these are 3×4"):
        classifier.rotations(torch.zeros(1, 1, 3, 4))


class Unlabelled:
    """The digits with their labels hidden (num_classes 0), as the patches or an image folder come."""

    NAME, levels, num_classes = "digits-unlabelled", 17, 0

    def __init__(self, dm, width: int | None = None):
        self.splits = {k: SimpleNamespace(images=v.images if width is None else v.images[..., :width], labels=None)
                       for k, v in dm.splits.items()}

    def setup(self, stage=None):
        pass


class TurnedSampler(ClassSampler):
    """Training images, each turned by ``turns`` quarter turns."""

    conditional = False

    def __init__(self, split, turns: int):
        super().__init__(split)
        self.turns = turns

    def sample(self, n, y=None):
        return torch.rot90(super().sample(n), self.turns, dims=(-2, -1))


def test_unlabelled_data_are_scored_by_a_rotation_classifier_that_sees_which_way_is_up(digits, tmp_path):
    from genzoo.callbacks import Fidelity

    data = Unlabelled(digits)

    def scored(turns):
        callback = Fidelity(cache_dir=str(tmp_path), seed=0, classifier_config={**TINY, "epochs": 2})
        torch.manual_seed(0)
        return callback.compute(OneProcessTrainer(data), TurnedSampler(digits.splits["train"], turns), "test"), \
            callback.records["test/fidelity_protocol"]

    upright, protocol = scored(0)
    turned, _ = scored(1)
    assert protocol["extractor"] == classifier.ROTATION_NAME and "is" not in upright
    assert 0.4 < upright["classifier_acc"] <= 1, "four turns: chance is 0.25 (a 180° turn of a 0, 1 or 8 is one)"
    assert upright["fid"] < 2 * upright["fid_floor"]
    assert turned["fid"] > 5 * upright["fid"], "the same images on their side are far from the data"
    assert [p.name.split("-")[:3] for p in (tmp_path / "classifiers").glob("*.pt")] == [
        ["digits", "unlabelled", "rotation"]]

    with pytest.warns(UserWarning, match="no class labels and their images are 8×6, not square"):
        assert Fidelity(cache_dir=str(tmp_path)).compute(OneProcessTrainer(Unlabelled(digits, width=6)),
                                                         TurnedSampler(digits.splits["train"], 0), "test") is None


def test_a_classifier_no_better_than_chance_gives_no_metric(digits, tmp_path):
    from genzoo.callbacks import Fidelity

    data = Unlabelled(digits)
    for split in data.splits.values():  # each image the sum of its four turns: turning it changes nothing
        split.images = sum(torch.rot90(split.images, k, dims=(-2, -1)) for k in range(4)) // 4
    callback = Fidelity(cache_dir=str(tmp_path), classifier_config={**TINY, "epochs": 2})
    with pytest.warns(UserWarning, match=r"tells the quarter turns of 720 test images apart no better than chance "
                                         r"\(accuracy 0\.2\d\d, chance 0\.250\)"):
        assert callback.compute(OneProcessTrainer(data), TurnedSampler(digits.splits["train"], 0), "test") is None


def test_reference_train_scores_both_stages_against_training_images_with_fresh_draws_at_test(digits, extractor,
                                                                                            tmp_path):
    from genzoo.callbacks import Fidelity

    callback = Fidelity(cache_dir=str(tmp_path), seed=0, reference="train", n=300)
    callback.extractor = extractor
    copies = ClassSampler(digits.splits["train"])  # draws training images: near the reference
    copies.conditional = False
    val = callback.compute(OneProcessTrainer(digits), copies, "val")
    test = callback.compute(OneProcessTrainer(digits), copies, "test")
    for stage in ("val", "test"):
        protocol = callback.records[f"{stage}/fidelity_protocol"]
        assert (protocol["reference"], protocol["reference_size"], protocol["samples"]) == ("digits train", 300, 300)
    assert "fid_floor" not in val and "fid_floor" not in test, "training images against themselves: no floor"
    assert val["fid"] != test["fid"], "the test samples are not the draws the checkpoint was chosen by"
    noise = ClassSampler(digits.splits["train"])
    noise.conditional, noise.sample = False, lambda n, y=None: torch.randint(17, (n, 1, 8, 8))
    assert callback.compute(OneProcessTrainer(digits), noise, "test")["fid"] > 5 * max(val["fid"], test["fid"])
    with pytest.raises(GenzooError, match="reference='val' is not a reference genzoo knows: use null"):
        Fidelity(cache_dir=str(tmp_path), reference="val")
