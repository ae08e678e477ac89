"""VQ-VAE and its learned prior: the quantiser's maths (nearest code, straight-through gradient, the two loss terms,
EMA updates, restarts of dead codes), the prior normalising over every code map of a tiny space, the bound adding
the prior's and the decoder's nats before dividing by the image's dimensions, and both stages end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from inprocess import run_main
from omegaconf import OmegaConf

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.models import VQVAEPrior
from genzoo.nn.vq import VectorQuantizer

TINY_FIRST = ["model=vqvae", "debug=smoke", "logger=csv", "callbacks.fidelity=null", "callbacks.progress_bar=null",
              "model.codebook_size=8", "model.code_dim=4", "model.net.channels=8", "model.net.resblocks=1"]
TINY_PRIOR = ["model=vqvae_prior", "debug=smoke", "logger=csv", "callbacks.fidelity=null",
              "callbacks.progress_bar=null", "model.prior.net.channels=8", "model.prior.net.layers=2",
              "model.prior.net.head_channels=16"]


def brute_force_nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N,) argmin_k Σ_d (z_d − e_kd)², one distance at a time."""
    return torch.tensor([min(range(len(codebook)), key=lambda k: float(((row - codebook[k]) ** 2).sum()))
                         for row in z])


def test_quantisation_picks_the_brute_force_nearest_code():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3, ema=False)
    vq.codebook.data = torch.randn(16, 3)
    z_e = torch.randn(2, 3, 4, 5)  # (B, D, h, w)
    indices = vq.quantize(z_e)
    assert indices.shape == (2, 4, 5)
    flat = z_e.movedim(1, -1).reshape(-1, 3)
    assert torch.equal(indices.flatten(), brute_force_nearest(flat, vq.codebook.data))
    z_q, *_ = vq.eval()(z_e)
    torch.testing.assert_close(z_q, vq.codebook.data[indices].movedim(-1, 1))  # forward: the codes themselves


def test_straight_through_gradient_reaches_the_encoder_unchanged():
    torch.manual_seed(1)
    vq = VectorQuantizer(8, 4, ema=False).eval()
    vq.codebook.data = torch.randn(8, 4)
    z_e = torch.randn(3, 4, 2, 2, requires_grad=True)
    weights = torch.randn(3, 4, 2, 2)
    z_st, indices, _, _ = vq(z_e)
    (z_st.pow(3) * weights).sum().backward()  # a non-linear decoder stand-in: its gradient depends on where it is
    z_q = vq.lookup(indices).detach().requires_grad_(True)
    (z_q.pow(3) * weights).sum().backward()
    torch.testing.assert_close(z_e.grad, z_q.grad)  # the gradient at z_q, passed to z_e as it is
    assert not torch.allclose(z_e.grad, 3 * z_e.detach().pow(2) * weights)


def test_codebook_and_commitment_terms_match_their_formulas_and_train_what_they_should():
    torch.manual_seed(2)
    vq = VectorQuantizer(5, 3, ema=False).eval()
    vq.codebook.data = torch.randn(5, 3)
    z_e = torch.randn(2, 3, 2, 3, requires_grad=True)
    _, indices, codebook, commitment = vq(z_e)
    e = vq.codebook.data[indices].movedim(-1, 1)  # (B, D, h, w): each position's chosen code
    expected = ((z_e.detach() - e) ** 2).sum() / z_e.numel()  # ‖·‖² averaged over positions and dimensions
    torch.testing.assert_close(codebook, expected)
    torch.testing.assert_close(commitment, expected)
    # sg[·]: the codebook term moves only the codes, the commitment term only the encoder's output
    grad_e, grad_codes = torch.autograd.grad(codebook, [z_e, vq.codebook], allow_unused=True)
    assert grad_e is None
    expected_codes = torch.zeros(5, 3).index_add_(0, indices.flatten(),
                                                  (2 * (e - z_e.detach()) / z_e.numel()).movedim(1, -1).reshape(-1, 3))
    torch.testing.assert_close(grad_codes, expected_codes)
    grad_e, grad_codes = torch.autograd.grad(commitment, [z_e, vq.codebook], allow_unused=True)
    assert grad_codes is None
    torch.testing.assert_close(grad_e, 2 * (z_e.detach() - e) / z_e.numel())


def test_ema_update_follows_the_moving_averages_with_laplace_smoothing():
    vq = VectorQuantizer(3, 2, ema=True, decay=0.9, epsilon=0.01, restart_after=0).train()
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(codes)
    vq.ema_sum.copy_(codes)
    # three vectors near code 0, one near code 1, none near code 2: a (1, 2, 2, 2) map of D = 2
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 1.0]])
    vq(z.T.reshape(1, 2, 2, 2))
    n = torch.tensor([3.0, 1.0, 0.0])
    sums = torch.stack([z[:3].sum(0), z[3], torch.zeros(2)])
    count = 0.9 * torch.ones(3) + 0.1 * n  # N starts at 1
    total = 0.9 * codes + 0.1 * sums  # m starts at the codes
    smoothed = (count + 0.01) / (count.sum() + 3 * 0.01) * count.sum()
    torch.testing.assert_close(vq.ema_count, count)
    torch.testing.assert_close(vq.ema_sum, total)
    torch.testing.assert_close(vq.codebook, total / smoothed[:, None])


@pytest.mark.parametrize("ema", [True, False])
def test_a_code_unused_for_restart_after_steps_is_redrawn_from_the_batch(ema):
    torch.manual_seed(3)
    vq = VectorQuantizer(4, 2, ema=ema, restart_after=2).train()
    vq.codebook.data.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [-50.0, 50.0], [1.0, 1.0]]))
    if ema:
        vq.ema_sum.copy_(vq.codebook)
    z_e = torch.tensor([[0.1, 0.2], [0.9, 1.2], [0.2, 0.0], [1.1, 0.8]]).T.reshape(1, 2, 2, 2)
    vq(z_e)  # codes 1 and 2 unused for one step: kept
    assert torch.equal(vq.steps_unused, torch.tensor([0, 1, 1, 0]))
    assert vq.codebook[1, 0] > 40  # still far from the data (EMA: shrunk a little by the smoothing)
    vq(z_e)  # and for a second: re-drawn from this batch's encoder outputs
    rows = z_e.movedim(1, -1).reshape(-1, 2)
    for k in (1, 2):
        assert any(torch.allclose(vq.codebook[k], r) for r in rows), vq.codebook
    assert torch.equal(vq.steps_unused, torch.zeros(4, dtype=torch.long))
    if ema:  # a fresh code is its own average: one pseudo-observation
        torch.testing.assert_close(vq.ema_sum[1:3], vq.codebook[1:3])
        assert vq.ema_count[1:3].tolist() == [1.0, 1.0]
    vq.eval()(z_e)  # evaluation never moves the codebook
    assert torch.equal(vq.steps_unused, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("target", ["genzoo.models.GatedPixelCNN", "genzoo.models.PixelCNN"])
def test_the_prior_over_code_maps_sums_to_one_over_every_map_of_a_tiny_space(target):
    # the shipped prior node instantiated as VQVAEPrior does it, over 1×2×2 code maps of K = 3 codes: 81 maps
    with initialize_config_module("genzoo.conf", version_base="1.3"):
        node = OmegaConf.to_container(compose("train", overrides=["model=vqvae_prior"]).model.prior)
    node.update(_target_=target, net={"channels": 8, "head_channels": 16})
    prior = build(OmegaConf.create(node), "model.prior", shape=(1, 2, 2), levels=3, num_classes=0).eval()
    maps = torch.tensor(list(itertools.product(range(3), repeat=4))).view(81, 1, 2, 2)
    with torch.no_grad():
        log_p = prior.log_likelihood(maps)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.tensor(0.0), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("vqvae")
    result = run_main("genzoo-train", [*TINY_FIRST, f"hydra.run.dir={work / 'first'}"], work)
    assert result.code == 0
    return work / "first"


@pytest.mark.slow
def test_both_stages_train_end_to_end_and_the_prior_samples_decoded_images(first_stage, tmp_path):
    final = json.loads((first_stage / "metrics.json").read_text())
    # the first stage's bound: its decoder's bits plus the uniform prior's h·w·log2 K over C·H·W = 16·3/64
    assert final["test/prior_bpd"] == pytest.approx(16 * 3 / 64)
    assert final["test/elbo_bpd"] == pytest.approx(final["test/recon_bpd"] + final["test/prior_bpd"], rel=1e-5)
    result = run_main("genzoo-train", [*TINY_PRIOR, f"model.vqvae_dir={first_stage}",
                                       f"hydra.run.dir={tmp_path / 'prior'}"], tmp_path)
    assert result.code == 0
    final = json.loads((tmp_path / "prior" / "metrics.json").read_text())
    assert final["test/elbo_bpd"] == pytest.approx(final["test/recon_bpd"] + final["test/prior_bpd"], rel=1e-5)
    assert list((tmp_path / "prior" / "samples").glob("epoch_*.png"))
    model = VQVAEPrior(shape=(1, 8, 8), levels=17, vqvae_dir=str(first_stage),
                       prior={"_target_": "genzoo.models.PixelCNN", "net": {"channels": 8, "head_channels": 16}})
    x = model.sample(5)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.long and 0 <= x.min() and x.max() <= 16


def test_the_bound_adds_prior_and_decoder_nats_before_dividing_by_the_image_dimensions(first_stage):
    model = VQVAEPrior(shape=(1, 8, 8), levels=17, vqvae_dir=str(first_stage),
                       prior={"_target_": "genzoo.models.PixelCNN", "net": {"channels": 8, "head_channels": 16}})
    model.eval()
    x = torch.randint(17, (4, 1, 8, 8))
    k = model.vqvae.codes(x)  # (B, h, w)
    decoder_nats = model.vqvae.distribution.log_prob(model.vqvae.decoder(model.vqvae.quantizer.codebook[k]
                                                                          .movedim(-1, 1)), x)
    prior_nats = model.prior.log_likelihood(k.unsqueeze(1))
    expected = -(decoder_nats + prior_nats) / (1 * 8 * 8 * math.log(2))
    metrics = model.evaluation_metrics(x, None, "test")
    torch.testing.assert_close(metrics["elbo_bpd"], expected)
    torch.testing.assert_close(metrics["elbo_bpd"], metrics["recon_bpd"] + metrics["prior_bpd"])
    torch.testing.assert_close(model.log_likelihood(x), decoder_nats + prior_nats)
    # the frozen first stage stays frozen and in evaluation mode while the prior trains
    model.train()
    assert not model.vqvae.training and model.prior.training
    assert not any(p.requires_grad for p in model.vqvae.parameters())


def test_a_first_stage_trained_on_other_data_is_refused_in_one_sentence(first_stage):
    with pytest.raises(GenzooError, match=r"was trained on images of shape \[1, 8, 8\] with 17 levels, and this "
                                          r"data has \[3, 8, 8\] with 256: train the prior"):
        VQVAEPrior(shape=(3, 8, 8), levels=256, vqvae_dir=str(first_stage))
