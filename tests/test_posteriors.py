"""The VAE's posteriors are what their docstrings claim: each IAF step is autoregressive in its MADE order with a
triangular Jacobian whose log-determinant the step reports, so is each planar step's (brute force against
``torch.linalg.slogdet``), the constrained planar map is invertible, and every posterior's bounds stay bounds on a
space small enough to sum over; then the conditional VAE, end to end.

The bounds are random estimates: comparisons average many draws and allow a few standard errors.
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
from PIL import Image
from torch.autograd.functional import jacobian

from genzoo.errors import GenzooError
from genzoo.models import VAE
from genzoo.nn.posteriors import IAFStep, InverseAutoregressiveFlow, PlanarFlow, planar_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 5


def brute_force_log_det(f, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(J (D, D) of f at z (D,), log|det J|), in float64."""
    jac = jacobian(f, z.double())
    return jac, torch.linalg.slogdet(jac).logabsdet


def test_each_iaf_step_is_autoregressive_with_a_triangular_jacobian_and_reports_its_log_determinant():
    torch.manual_seed(0)
    step = IAFStep(D, context=3, hidden=12).double()
    for p in step.parameters():  # away from the initial near-identity, so every entry the masks allow is non-zero
        torch.nn.init.normal_(p, std=0.5)
    h = torch.randn(1, 3, dtype=torch.float64)
    z = torch.randn(D, dtype=torch.float64)

    def made_outputs(v):  # (2D,): m and s, before the gate
        a = torch.nn.functional.elu(step.first(v[None]) + step.context(h))
        return step.out(torch.nn.functional.elu(step.middle(a)))[0]

    made = jacobian(made_outputs, z)  # (2D, D)
    for outputs in (made[:D], made[D:]):  # m_i and s_i see z_{<i} only: strictly lower triangular
        assert torch.all(outputs.triu() == 0), outputs
        assert torch.all(outputs[tuple(torch.tril_indices(D, D, -1))] != 0), "a mask cut too much"
    jac, log_det = brute_force_log_det(lambda v: step(v[None], h)[0][0], z)
    assert torch.all(jac.triu(1) == 0), jac
    sigma = torch.sigmoid(made_outputs(z)[D:])
    torch.testing.assert_close(jac.diagonal(), sigma)
    torch.testing.assert_close(step(z[None], h)[1][0], log_det)


def test_the_iaf_reverses_the_order_between_steps_and_its_log_determinant_is_the_whole_jacobian_s():
    torch.manual_seed(1)
    flow = InverseAutoregressiveFlow(D, steps=3, hidden=12, context=3).double()
    features = torch.randn(1, flow.features, dtype=torch.float64)
    z = torch.randn(D, dtype=torch.float64)
    jac, log_det = brute_force_log_det(lambda v: flow.transform(v[None], features)[0][0], z)
    torch.testing.assert_close(flow.transform(z[None], features)[1][0], log_det)
    # three steps in alternating order: the last output depends on every input, so the composite is not triangular
    assert torch.all(jac != 0)
    one = InverseAutoregressiveFlow(D, steps=2, hidden=12, context=3).double()
    one.steps[0].out.weight.data.zero_()  # step 1 the identity map on z (σ·z + (1−σ)·m with m, s constant)
    jac2, _ = brute_force_log_det(lambda v: one.transform(v[None], features[:, : one.features])[0][0], z)
    # step 2 is autoregressive in the reversed order: output i sees z_{D−1−i} and the z_j after it
    reversed_order = jac2.flip(-1)
    assert torch.all(reversed_order.triu(1) == 0) and torch.all(reversed_order.diagonal() != 0), jac2
    assert torch.all(reversed_order[tuple(torch.tril_indices(D, D, -1))] != 0), jac2


def test_each_planar_step_reports_its_log_determinant_and_stays_invertible_under_the_constraint():
    torch.manual_seed(2)
    w = torch.randn(1, D, dtype=torch.float64)
    u = -5 * w / w.pow(2).sum()  # wᵀu = −5: unconstrained, f would fold space (1 + wᵀu·h' < 0 near wᵀz + b = 0)
    b = torch.randn(1, dtype=torch.float64)
    for z in torch.randn(4, D, dtype=torch.float64):
        _, log_det = brute_force_log_det(lambda v: planar_step(v[None, None], u, w, b)[0][0, 0], z)
        torch.testing.assert_close(planar_step(z[None, None], u, w, b)[1][0, 0], log_det)
    # f(z) = z + û·tanh(wᵀz + b) is invertible iff a ↦ a + wᵀû·tanh(a + b) increases: solve for a = wᵀz by
    # bisection, then z = f(z) − û·tanh(a + b) — the inverse recovers every z
    z = 3 * torch.randn(200, D, dtype=torch.float64)
    fz, log_det = planar_step(z[None], u, w, b)
    assert torch.all(torch.isfinite(log_det))
    wu = (w * u).sum()
    u_hat = u + (torch.nn.functional.softplus(wu) - 1 - wu) * w / w.pow(2).sum()
    assert (w * u_hat).sum() >= -1
    target = (fz[0] * w).sum(-1)  # (200,) wᵀf(z)
    lo, hi = torch.full_like(target, -100.0), torch.full_like(target, 100.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        above = mid + (w * u_hat).sum() * torch.tanh(mid + b) > target
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    recovered = fz[0] - u_hat * torch.tanh((lo + hi) / 2 + b)[:, None]
    torch.testing.assert_close(recovered, z)
    a = torch.linspace(-5, 5, 1001, dtype=torch.float64)  # and the unconstrained u would not be invertible
    assert torch.any(torch.diff(a + wu * torch.tanh(a)) < 0)


def tiny_vae(posterior: str) -> VAE:
    """DESIGN.md's contract: the model config builds the MLP VAE for any space; here 1×2×2 binary images."""
    cfg = OmegaConf.merge(OmegaConf.load(files("genzoo.conf") / "model" / "vae.yaml"),
                          {"net": {"arch": "mlp", "hidden": 16, "depth": 1}, "z_dim": 2, "posterior": posterior,
                           "flow_steps": 2, "flow_hidden": 8, "flow_context": 4})
    return instantiate(cfg, shape=(1, 2, 2), levels=2, num_classes=0)


@pytest.mark.parametrize("posterior", ["diagonal", "iaf", "planar"])
def test_every_posterior_gives_bounds_that_sum_below_one_and_grow_with_k_on_a_tiny_space(posterior):
    torch.manual_seed(0)
    model = tiny_vae(posterior)
    images = torch.tensor(list(itertools.product([0, 1], repeat=4))).view(16, 1, 2, 2)
    frequencies = torch.full((16,), 0.02)
    frequencies[[0, 15, 3]] = torch.tensor([0.4, 0.3, 0.1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # trained, so the posterior is far from the prior and the flow far from the identity
        loss = -model.elbo(images[torch.multinomial(frequencies, 64, replacement=True)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.manual_seed(1)
    totals, means = {}, {}
    with torch.no_grad():
        for k, draws in ((1, 400), (8, 400), (256, 100)):
            # every row of the repeated batch is an independent draw of the bound of its image
            bounds = model.log_likelihood(images.repeat(draws, 1, 1, 1), k=k).view(draws, 16).double()
            bound, se = bounds.mean(0), bounds.std(0) / math.sqrt(draws)
            totals[k] = bound.exp().sum().item()  # Σ_x exp E[L_k(x)] ≤ Σ_x p(x) = 1
            assert totals[k] <= 1 + 3 * (bound.exp() * se).sum().item(), (k, totals[k])
            means[k] = (bounds.mean(1).mean().item(), bounds.mean(1).std().item() / math.sqrt(draws))
    for lo, hi in ((1, 8), (8, 256)):  # non-decreasing in k, on average over draws
        assert means[hi][0] - means[lo][0] > -3 * math.hypot(means[lo][1], means[hi][1]), means
    # a density that does not normalise (a wrong log-determinant) moves the large-k total away from 1
    assert totals[256] > 0.97, totals
    assert means[256][0] - means[1][0] > 5 * math.hypot(means[1][1], means[256][1]), means


def test_train_samples_trains_on_the_importance_weighted_bound_and_refuses_beta():
    x = torch.randint(2, (6, 1, 2, 2))
    model = VAE(shape=(1, 2, 2), levels=2, z_dim=2, net=dict(arch="mlp", hidden=8, depth=1), posterior="iaf",
                flow_hidden=8, flow_context=4, train_samples=16)
    torch.manual_seed(7)
    loss = model.loss(x, None)
    torch.manual_seed(7)
    assert loss.item() == pytest.approx(model.bits_per_dim(model.log_likelihood(x, k=16)).mean().item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.q.parameters())  # the flow learns from L_k too
    with pytest.raises(GenzooError, match="train_samples=16 with model.beta=0.5"):
        VAE(shape=(1, 2, 2), levels=2, net=dict(arch="mlp"), train_samples=16, beta=0.5)


def test_the_planar_features_hold_every_steps_u_w_b():
    flow = PlanarFlow(z_dim=3, steps=4)
    assert flow.features == 2 * 3 + 4 * (2 * 3 + 1)


def test_the_conditional_vae_uses_the_label_and_samples_the_class_asked_for():
    torch.manual_seed(0)
    model = VAE(shape=(1, 8, 8), levels=17, num_classes=10, z_dim=3, net=dict(channels=4), conditional=True)
    for p in (model.encoder.embed.weight, model.decoder.embed.weight):  # zero at start: make the labels matter
        torch.nn.init.normal_(p)
    x = torch.randint(17, (4, 1, 8, 8))
    z = torch.randn(4, 3)
    logits = [model.decoder_logits(z, torch.full((4,), c)) for c in (0, 1)]
    assert not torch.allclose(*logits), "the decoder ignores the label"
    features = [model.posterior_features(x, torch.full((4,), c)) for c in (0, 1)]
    assert not torch.allclose(*features), "the encoder ignores the label"
    assert model.log_likelihood(x, torch.zeros(4, dtype=torch.long), k=3).shape == (4,)
    torch.manual_seed(5)
    first = model.sample(4, torch.tensor([0, 0, 1, 1]))
    torch.manual_seed(5)
    again = model.sample(4, torch.tensor([0, 0, 1, 1]))
    torch.manual_seed(5)
    other = model.sample(4, torch.tensor([7, 7, 7, 7]))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.slow
def test_cli_smoke_runs_of_the_iaf_vae_and_the_conditional_vae_write_bounds_and_a_row_per_class(cli, tmp_path):
    tiny = ["debug=smoke", "logger=csv", "callbacks.fidelity=null", "model.net.channels=8", "model.eval_samples=20"]
    iaf = cli.train("model=vae", "model.posterior=iaf", *tiny, workdir=tmp_path / "iaf")
    assert iaf.returncode == 0, iaf.tail()
    metrics = json.loads((iaf.run_dir() / "metrics.json").read_text())
    assert 0 < metrics["test/iwae20_bpd"] < math.log2(17) + 1 and math.isfinite(metrics["test/elbo_bpd"])
    assert OmegaConf.load(iaf.run_dir() / "config.yaml").model.posterior == "iaf"

    cvae = cli.train("experiment=digits_cvae", *tiny, "callbacks.sample_grid.n=20", workdir=tmp_path / "cvae")
    assert cvae.returncode == 0, cvae.tail()
    run_dir = cvae.run_dir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test/iwae20_bpd"]) and "probe/acc_100pct" not in metrics
    # 20 samples over 10 classes: 10 rows of 2, each digit upscaled to 64 px with 2 px of padding around it
    width, height = Image.open(run_dir / "samples" / "epoch_001.png").size
    assert (width, height) == (2 + 2 * 66, 2 + 10 * 66)
