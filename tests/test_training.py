"""Learning: a short training on the digits beats the independent-pixel baseline, and bits/dim mean what they say."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from genzoo.data import DigitsDataModule
from genzoo.models import PixelCNN

INDEPENDENT_PIXELS_BPD = 2.44  # per-pixel categoricals fitted to the digits' training split


def test_bits_per_dim_is_nats_over_dims_ln2():
    model = PixelCNN(shape=(3, 4, 5), levels=256, net=dict(channels=6, blocks=1, head_channels=6))
    ll = torch.tensor([-60.0 * math.log(2), 0.0])
    assert torch.allclose(model.bits_per_dim(ll), torch.tensor([1.0, 0.0]))


def test_untrained_model_is_near_uniform_and_short_training_beats_independent_pixels(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10, batch_size=64)
    model = PixelCNN(shape=(1, 8, 8), levels=17, net=dict(channels=32, blocks=3, head_channels=64, bottleneck=False),
                     lr=5e-3, scheduler="onecycle", monitor="val/bpd")
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]["test/bpd"]
    assert abs(before - math.log2(17)) < 0.5  # a fresh softmax is close to uniform: 4.09 bits/dim
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]["test/bpd"]
    assert after < INDEPENDENT_PIXELS_BPD, after
