"""The VAE's bounds are what they claim: the closed-form KL, the ELBO as the one-sample importance-weighted bound,
L_1 ≤ L_8 ≤ L_64 in expectation, and L_k → log p(x) from below on a space small enough to integrate exactly.

The bounds are random estimates: every comparison averages many draws and allows a few standard errors of the
measured spread, with the RNG seeded so a run is repeatable.
"""

from __future__ import annotations

import itertools
import json
import math
from importlib.resources import files

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genzoo.data import DigitsDataModule
from genzoo.errors import GenzooError
from genzoo.models import VAE
from genzoo.models.vae import diagonal_normal_log_prob, gaussian_kl, standard_normal_log_prob


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mean_and_se(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the first axis and its standard error."""
    draws = draws.double()
    return draws.mean(0), draws.std(0) / math.sqrt(len(draws))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    dm = DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10)
    dm.setup()
    return dm.splits["val"].images[:32]


@pytest.fixture(scope="module")
def digits_vae(digits) -> VAE:
    """A conv VAE after 30 Adam steps on the digits: its posterior is still far from exact, so the bounds differ."""
    torch.manual_seed(0)
    model = VAE(shape=(1, 8, 8), levels=17, z_dim=4, net=dict(channels=16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = -model.elbo(digits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_closed_form_kl_matches_a_monte_carlo_estimate():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    z = mu + torch.randn(200_000, 6, 3, generator=gen) * torch.exp(0.5 * logvar)  # (N, B, z_dim)
    log_ratio = diagonal_normal_log_prob(z, mu, logvar) - standard_normal_log_prob(z)  # (N, B)
    estimate, se = mean_and_se(log_ratio)
    exact = gaussian_kl(mu, logvar).double()
    assert torch.all((estimate - exact).abs() < 4 * se + 1e-4), (estimate, exact, se)


def test_elbo_equals_the_one_sample_importance_weighted_bound_in_expectation(digits, digits_vae):
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = torch.stack([digits_vae.elbo(digits).mean() for _ in range(300)])
        bound_1 = torch.stack([digits_vae.log_likelihood(digits, k=1).mean() for _ in range(300)])
    (m_elbo, se_elbo), (m_1, se_1) = mean_and_se(elbo), mean_and_se(bound_1)
    assert abs(m_elbo - m_1) < 4 * math.hypot(se_elbo, se_1), (m_elbo, m_1, se_elbo, se_1)


def test_importance_weighted_bound_is_above_the_elbo_and_non_decreasing_in_k(digits, digits_vae):
    torch.manual_seed(2)
    with torch.no_grad():
        elbo = mean_and_se(torch.stack([digits_vae.elbo(digits).mean() for _ in range(40)]))
        bounds = {k: mean_and_se(torch.stack([digits_vae.log_likelihood(digits, k=k).mean() for _ in range(40)]))
                  for k in (1, 8, 64)}
    for (lo, se_lo), (hi, se_hi) in [(elbo, bounds[8]), (bounds[1], bounds[8]), (bounds[8], bounds[64])]:
        assert hi - lo > -3 * math.hypot(se_lo, se_hi), (lo, hi, se_lo, se_hi)
    # not only "not below": with this rough posterior, more samples help by many standard errors
    assert bounds[64][0] - bounds[1][0] > 10 * math.hypot(bounds[1][1], bounds[64][1])


def test_importance_weighted_bound_approaches_the_exact_log_likelihood_from_below():
    """z_dim = 1 and 1×2×2 binary images: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by quadrature, for all 16 images."""
    torch.manual_seed(0)
    model = VAE(shape=(1, 2, 2), levels=2, z_dim=1, net=dict(arch="mlp", hidden=16, depth=1))
    images = torch.tensor(list(itertools.product([0, 1], repeat=4))).view(16, 1, 2, 2)
    frequencies = torch.full((16,), 0.02)
    frequencies[[0, 15, 3]] = torch.tensor([0.4, 0.3, 0.1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # a trained model, so log p(x) is far from uniform and the posterior far from the prior
        loss = -model.elbo(images[torch.multinomial(frequencies, 128, replacement=True)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    with torch.no_grad():
        z = torch.linspace(-12, 12, 24001, dtype=torch.float64)  # N(0, 1) beyond ±12 is below 1e-31
        logits = model.decoder_logits(z[:, None].float()).double()  # (Z, 1, 2, 2)
        log_px_z = torch.stack([model.log_px_given_z(logits, x.expand(len(z), 1, 2, 2)) for x in images], 1)
        log_px = torch.logsumexp(log_px_z + standard_normal_log_prob(z[:, None, None]), 0) + math.log(24 / 24000)
        assert log_px.exp().sum().item() == pytest.approx(1.0, abs=1e-6)  # the quadrature itself is right

        totals = {}
        for k, draws in ((1, 2000), (8, 2000), (64, 2000), (4096, 400)):
            bound, se = mean_and_se(torch.stack([model.log_likelihood(images, k=k) for _ in range(draws)]))  # (16,)
            assert torch.all(bound <= log_px + 4 * se), (k, bound - log_px, se)
            # exp of one estimate is unbiased for p(x); exp of the averaged log-estimate sits below it
            totals[k] = bound.exp().sum().item()
            assert totals[k] <= 1 + 3 * (bound.exp() * se).sum().item(), (k, totals[k])
        assert torch.all((log_px - bound).abs() < 5e-3), log_px - bound  # k = 4096: within a few thousandths
    # at small k the gap to log p(x) is many standard errors wide; at k = 4096 it is below the noise
    assert totals[1] < totals[8] < 1.0 and totals[4096] == pytest.approx(1.0, abs=2e-3), totals


def test_large_k_is_evaluated_in_chunks_that_agree_with_one_pass(digits, digits_vae):
    x = digits[:8]
    assert digits_vae.samples_per_pass(len(x)) >= 64  # the default budget decodes 64 draws of 8 digits at once
    chunked = VAE(shape=(1, 8, 8), levels=17, z_dim=4, net=dict(channels=16), eval_chunk_mb=0.0)
    chunked.load_state_dict(digits_vae.state_dict())
    assert chunked.samples_per_pass(len(x)) == 1
    torch.manual_seed(3)
    with torch.no_grad():
        one_pass = mean_and_se(torch.stack([digits_vae.log_likelihood(x, k=64).mean() for _ in range(40)]))
        in_chunks = mean_and_se(torch.stack([chunked.eval().log_likelihood(x, k=64).mean() for _ in range(40)]))
    assert abs(one_pass[0] - in_chunks[0]) < 4 * math.hypot(one_pass[1], in_chunks[1])


def test_beta_and_kl_warmup_scale_only_the_kl_term_of_the_training_loss(digits, digits_vae):
    x = digits[:8]
    losses = {}
    for beta, warmup in ((1.0, 0), (0.5, 0), (1.0, 4)):
        model = VAE(shape=(1, 8, 8), levels=17, z_dim=4, net=dict(channels=16), beta=beta, kl_warmup_steps=warmup)
        model.load_state_dict(digits_vae.state_dict())
        torch.manual_seed(4)  # the same draw of z for every model
        losses[beta, warmup] = model.loss(x, None).item()
    log_px_z, kl = (t.mean().item() / (64 * math.log(2)) for t in model._terms)  # nats → bits/dim
    assert losses[1.0, 0] == pytest.approx(-log_px_z + kl, rel=1e-5)  # −ELBO
    assert losses[0.5, 0] == pytest.approx(-log_px_z + 0.5 * kl, rel=1e-5)
    assert losses[1.0, 4] == pytest.approx(-log_px_z + 0.25 * kl, rel=1e-5)  # step 0 of a 4-step ramp: weight 1/4


@pytest.mark.parametrize("levels", [2, 5])
def test_the_model_config_builds_an_mlp_vae_for_any_space(levels):
    # DESIGN.md's contract: instantiate(cfg.model, shape=..., levels=..., num_classes=...) builds the MLP VAE
    cfg = OmegaConf.merge(OmegaConf.load(files("genzoo.conf") / "model" / "vae.yaml"), {"net": {"arch": "mlp"}})
    model = instantiate(cfg, shape=(1, 3, 3), levels=levels, num_classes=0)
    assert isinstance(model, VAE) and model.likelihood == "bound"
    x = torch.randint(levels, (4, 1, 3, 3))
    assert model.log_likelihood(x, k=3).shape == (4,)
    samples = model.sample(5)
    assert samples.shape == (5, 1, 3, 3) and samples.dtype == torch.long
    assert 0 <= samples.min() and samples.max() < levels


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_conv_vae_round_trips_every_supported_shape(size, channels):
    model = VAE(shape=(channels, size, size), levels=17, z_dim=3, net=dict(channels=4), eval_samples=2)
    x = torch.randint(17, (2, channels, size, size))
    mu, logvar = model.posterior(x)
    assert mu.shape == logvar.shape == (2, 3)
    assert model.decoder_logits(mu).shape == (2, channels * 17, size, size)  # the categorical: C·L logits
    assert model.decode(mu).shape == (2, channels, size, size)
    assert model.sample(2).shape == (2, channels, size, size)
    metrics = model.evaluation_metrics(x, None, "test")
    assert set(metrics) == {"elbo_bpd", "iwae2_bpd"} and all(v.shape == (2,) for v in metrics.values())


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 8, 8), (1, 8, 10), (1, 3, 3)])
def test_conv_vae_refuses_other_shapes_naming_the_supported_ones(shape):
    with pytest.raises(GenzooError, match="8×8, 28×28, 32×32 and 64×64.*model.net.arch=mlp"):
        VAE(shape=shape, levels=2)


def test_cli_smoke_run_writes_both_bounds_and_the_pictures(cli, tmp_path):
    run = cli.train("model=vae", "debug=smoke", "model.z_dim=2", "model.eval_samples=100", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    run_dir = run.run_dir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/elbo_bpd", "test/elbo_bpd", "test/iwae100_bpd"):
        assert math.isfinite(metrics[key]) and 0 < metrics[key] < math.log2(17) + 1, (key, metrics)
    assert "test/bpd" not in metrics  # a bound is never reported under the exact-likelihood key
    assert metrics["test/iwae100_bpd"] <= metrics["test/elbo_bpd"] + 0.05
    assert metrics["best_score"] == pytest.approx(metrics["val/elbo_bpd"])
    pictures = {p.name for p in (run_dir / "samples").glob("*.png")}
    assert {"epoch_001.png", "reconstructions_test.png", "interpolations_test.png", "manifold_test.png"} <= pictures
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    media = {p.name.split("_")[0] for p in wandb_run.glob("files/media/images/*.png")}
    assert {"samples", "reconstructions", "interpolations", "manifold"} <= media, media


@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 3), ((3, 1, 1), 4)], ids=["grey", "rgb"])
def test_a_logistic_mixture_decoder_normalises_and_its_elbo_stays_below_one_in_total(shape, levels):
    torch.manual_seed(0)
    model = VAE(shape=shape, levels=levels, z_dim=2, net=dict(arch="mlp", hidden=8, depth=1),
                decoder="logistic_mixture", components=2).eval()
    images = torch.tensor(list(itertools.product(range(levels), repeat=math.prod(shape)))).view(-1, *shape)
    with torch.no_grad():
        params = model.decoder_logits(torch.randn(1, 2)).expand(len(images), -1, -1, -1)
        total = model.log_px_given_z(params, images).double().exp().sum().item()
        assert total == pytest.approx(1.0, abs=1e-5)  # p(x|z) over every image, the channels linked
        elbo = torch.stack([model.elbo(images) for _ in range(200)]).mean(0)  # (N,) E_q[ELBO]
        assert elbo.double().exp().sum().item() < 1.0
        samples = model.sample(64)
    assert samples.shape == (64, *shape) and 0 <= samples.min() and samples.max() < levels
