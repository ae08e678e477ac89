"""The autoencoder and the linear probe: shapes, reconstruction that improves with training, features that beat
a random encoder, the probe's subsets and classifier, and the installed ``genzoo-train model=autoencoder``."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from genzoo.callbacks import LinearProbe
from genzoo.callbacks.linear_probe import encode_all, fit_linear_probe, probe_accuracies, stratified_subset
from genzoo.data import DigitsDataModule
from genzoo.errors import GenzooError
from genzoo.models import Autoencoder

PROBE_KEYS = {f"probe/{prefix}acc_{p}pct" for prefix in ("", "raw_", "random_") for p in (1, 10, 100)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_conv_autoencoder_round_trips_every_supported_shape(size, channels):
    model = Autoencoder(shape=(channels, size, size), levels=256, z_dim=5, net=dict(channels=4))
    x = torch.randint(256, (2, channels, size, size), dtype=torch.uint8)
    z = model.encode(x)
    assert z.shape == (2, 5)
    assert model.decoder(z).shape == (2, channels, size, size)
    decoded = model.decode(z)
    assert decoded.shape == (2, channels, size, size) and 0 <= decoded.min() and decoded.max() <= 255
    assert model.evaluation_metrics(x, None, "val")["mse"].shape == (2,)
    samples = model.sample(3)
    assert samples.shape == (3, channels, size, size) and samples.dtype == torch.long


@pytest.mark.parametrize("shape", [(1, 16, 16), (4, 32, 32), (3, 28, 32), (1, 3, 3)])
def test_conv_autoencoder_refuses_other_shapes_in_one_sentence_naming_the_supported_ones(shape):
    with pytest.raises(GenzooError, match=r"^model\.net\.arch=conv supports .*8×8, 28×28, 32×32 and 64×64.*\.$"):
        Autoencoder(shape=shape, levels=2)


def test_mlp_autoencoder_takes_any_shape():
    model = Autoencoder(shape=(2, 3, 5), levels=4, z_dim=2, net=dict(arch="mlp", hidden=8))
    x = torch.randint(4, (6, 2, 3, 5))
    assert model.loss(x, None).ndim == 0 and model.sample(2).shape == (2, 2, 3, 5)


def test_sampler_draws_codes_from_a_gaussian_fitted_to_the_training_codes_of_the_current_weights():
    torch.manual_seed(0)
    model = Autoencoder(shape=(1, 8, 8), levels=17, z_dim=3, net=dict(arch="mlp", hidden=16))
    assert torch.equal(model.code_cov, torch.eye(3))  # N(0, I) before it is fitted
    x = torch.randint(17, (200, 1, 8, 8), dtype=torch.uint8)
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), global_step=0,
                              datamodule=SimpleNamespace(splits={"train": SimpleNamespace(images=x)}))
    model._trainer = trainer

    def codes():
        with torch.no_grad():
            return model.encode(x).double()

    model.on_train_epoch_end()
    z = codes()
    assert torch.allclose(model.code_mean.double(), z.mean(0), atol=1e-5)
    assert torch.allclose(model.code_cov.double(), torch.cov(z.T, correction=0), atol=1e-5)

    with torch.no_grad():  # a training step changes the weights
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.sample(2)
    assert torch.allclose(model.code_mean.double(), z.mean(0), atol=1e-5), "refitted without a new step"
    trainer.global_step = 1
    samples = model.sample(50)
    z = codes()
    assert torch.allclose(model.code_mean.double(), z.mean(0), atol=1e-5), "not refitted after a step"
    assert samples.shape == (50, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 16

    trainer.state.fn, trainer.global_step = "test", 2  # outside a fit the Gaussian is the saved one
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.sample(2)
    assert torch.allclose(model.code_mean.double(), z.mean(0), atol=1e-5)


# ---- training and the probe --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10, batch_size=64)
    dm.setup()
    return dm


def test_short_training_lowers_reconstruction_error_and_beats_a_random_encoder_in_the_probe(digits, tmp_path):
    pl.seed_everything(0, verbose=False)
    model = Autoencoder(shape=(1, 8, 8), levels=17, num_classes=10, lr=3e-3, scheduler="onecycle",
                        monitor="val/mse")
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    before = trainer.validate(model, datamodule=digits, verbose=False)[0]["val/mse"]
    trainer.fit(model, datamodule=digits)
    after = trainer.validate(model, datamodule=digits, verbose=False)[0]["val/mse"]
    assert after < 0.2 * before, (before, after)

    model.eval()
    random_model = LinearProbe(seed=0).random_encoder(model)
    train, test = digits.splits["train"], digits.splits["test"]
    features = {prefix: (encode_all(m.encode, train.images, "cpu", 512), encode_all(m.encode, test.images, "cpu", 512))
                for prefix, m in (("", model), ("random_", random_model))}
    acc = probe_accuracies(features, train.labels, test.labels, 10, fractions=(0.01, 0.1))
    # 180 test images: a gain of 0.03 is 5-6 images; six epochs give about 0.1 on average over 1 % and 10 %
    gain = np.mean([acc[f"probe/acc_{p}pct"] - acc[f"probe/random_acc_{p}pct"] for p in (1, 10)])
    assert gain > 0.03, acc


def test_stratified_subset_is_seeded_sized_and_holds_every_class(digits):
    labels = digits.splits["train"].labels.numpy()
    one_pct = stratified_subset(labels, 0.01, seed=0)
    assert len(one_pct) == round(0.01 * len(labels)) and len(set(labels[one_pct])) == 10
    assert np.array_equal(one_pct, stratified_subset(labels, 0.01, seed=0))
    assert not np.array_equal(one_pct, stratified_subset(labels, 0.01, seed=1))
    assert np.array_equal(stratified_subset(labels, 1.0, seed=0), np.arange(len(labels)))
    assert len(stratified_subset(labels, 0.004, seed=0)) == 6  # fewer slots than classes: plain random subset


def test_linear_probe_separates_separable_classes_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=gen) * 4
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 5, generator=gen)
    acc = fit_linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=3)
    assert acc > 0.95
    assert acc == fit_linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=3)


def test_linear_probe_skips_unlabelled_data_with_one_line(caplog):
    model = Autoencoder(shape=(1, 8, 8), levels=17, num_classes=0, z_dim=2, net=dict(arch="mlp", hidden=8))
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(splits={}))
    with caplog.at_level(logging.INFO, logger="genzoo.callbacks.linear_probe"):
        LinearProbe().on_test_epoch_end(trainer, model)
    (record,) = caplog.records
    assert "no class labels" in record.getMessage() and "\n" not in record.getMessage()


# ---- the installed entry point -----------------------------------------------------------------------------------
def test_cli_smoke_run_writes_reconstruction_error_probe_accuracies_and_pictures(cli, tmp_path):
    run = cli.train("model=autoencoder", "debug=smoke", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    run_dir = run.run_dir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["val/mse"]) and math.isfinite(metrics["test/mse"])
    assert metrics["best_score"] == pytest.approx(metrics["val/mse"])
    assert PROBE_KEYS <= set(metrics), sorted(metrics)
    assert all(0.0 <= metrics[key] <= 1.0 for key in PROBE_KEYS)
    assert metrics["probe/raw_acc_100pct"] > 0.9  # the digits' pixels alone are nearly linearly separable
    pictures = {p.name for p in (run_dir / "samples").glob("*.png")}
    assert {"epoch_001.png", "reconstructions_epoch_001.png", "reconstructions_test.png",
            "interpolations_test.png"} <= pictures, pictures
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    media = {p.name.split("_")[0] for p in wandb_run.glob("files/media/images/*.png")}
    assert {"samples", "reconstructions", "interpolations"} <= media, media
    summary = cli.wandb_summary(wandb_run)["summary"]
    assert summary["probe/acc_10pct"] == pytest.approx(metrics["probe/acc_10pct"])
