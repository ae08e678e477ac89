"""The maths of the autoregressive models: causality, receptive field, normalisation, sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genzoo.models import DiagonalBiLSTM, GatedPixelCNN, PixelCNN, PixelCNNPP, RowLSTM
from genzoo.nn.masked import MaskedConv2d

from causality import allowed_map, dependency_map

# Tiny networks: a second torch thread only waits for a busy core (30× slower under load).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "pixelcnn": dict(channels=12, blocks=2, head_channels=16),
    "gated_pixelcnn": dict(channels=12, layers=3, head_channels=16),
    "row_lstm": dict(hidden=6, layers=2, head_channels=16),
    "diagonal_bilstm": dict(hidden=6, layers=2, head_channels=16),
    "pixelcnn_pp": dict(channels=6, resnets=1),
}
MODELS = {
    "pixelcnn": PixelCNN, "gated_pixelcnn": GatedPixelCNN, "row_lstm": RowLSTM, "diagonal_bilstm": DiagonalBiLSTM,
    "pixelcnn_pp": PixelCNNPP,
}


def small_model(name: str, shape, levels: int = 4, **net):
    torch.manual_seed(0)
    return MODELS[name](shape=shape, levels=levels, num_classes=0, net={**SMALL[name], **net}).eval()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4)], ids=["grey", "rgb"])
def test_logits_depend_only_on_earlier_subpixels(name, shape):
    model = small_model(name, shape)
    dep, allowed = dependency_map(model, shape), allowed_map(shape)
    leaks = (dep & ~allowed).nonzero().tolist()
    assert not leaks, f"{name} sees the future at (c, i, j, c', i', j') = {leaks[:5]}"


@pytest.mark.parametrize("shape", [(1, 6, 6), (3, 5, 5)], ids=["grey", "rgb"])
def test_gated_pixelcnn_sees_every_earlier_subpixel(shape):
    # Deep enough that the vertical stack's field covers the whole image: no blind spot anywhere.
    torch.manual_seed(0)
    model = GatedPixelCNN(shape=shape, levels=4, net=dict(channels=12, layers=4, kernel_size=3, head_channels=16))
    model.eval()
    dep, allowed = dependency_map(model, shape), allowed_map(shape)
    c, h, w = shape
    assert torch.equal(dep[c - 1, h - 1, w - 1], allowed[c - 1, h - 1, w - 1])
    missing = (allowed & ~dep).nonzero().tolist()
    assert not missing, f"gated PixelCNN misses earlier sub-pixels: {missing[:5]}"


def test_pixelcnn_blind_spot_is_pinned():
    # Stacked masked kernels never carry information from the right part of the row above back to the left
    # end of the next row: pixel (6, 7) cannot influence (7, 0), however deep the network. Gated PixelCNN fixes
    # this; if this test fails, the plain PixelCNN is no longer the paper's model.
    shape = (1, 8, 8)
    torch.manual_seed(0)
    deep = PixelCNN(shape=shape, levels=4, net=dict(channels=12, blocks=6, head_channels=16)).eval()
    dep = dependency_map(deep, shape)
    assert not dep[0, 7, 0, 0, 6, 7]
    assert dep[0, 7, 0, 0, 6, 0] and dep[0, 7, 0, 0, 4, 3]  # near pixels above are seen
    gated = GatedPixelCNN(shape=shape, levels=4, net=dict(channels=12, layers=5, kernel_size=3, head_channels=16))
    gated.eval()
    assert dependency_map(gated, shape)[0, 7, 0, 0, 6, 7]


def all_images(shape, levels):
    d = math.prod(shape)
    grid = torch.tensor(list(itertools.product(range(levels), repeat=d)))
    return grid.view(-1, *shape)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 3, 3), (3, 2, 2)], ids=["grey", "rgb"])
def test_likelihood_sums_to_one_before_and_after_training(name, shape):
    levels = 2
    model = small_model(name, shape, levels=levels).train()
    x = all_images(shape, levels)  # every binary image: 512 grey 3×3, 4096 colour 2×2
    assert len(x) == levels ** math.prod(shape)

    def total_probability():
        model.eval()
        with torch.no_grad():
            return model.log_likelihood(x).double().exp().sum().item()

    assert total_probability() == pytest.approx(1.0, abs=1e-4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = x[torch.randint(0, len(x), (64,))]
    model.train()
    for _ in range(20):
        opt.zero_grad()
        model.loss(data, torch.full((64,), -1)).backward()
        opt.step()
    assert total_probability() == pytest.approx(1.0, abs=1e-4)


def test_draws_follow_the_softmax_and_never_give_an_impossible_value():
    from genzoo.models.autoregressive import Draws

    logits = torch.tensor([0.3, -1.0, float("-inf"), 2.0, 0.0])
    p = torch.softmax(logits, 0)
    torch.manual_seed(0)
    n = 40_000
    draws = Draws(n, (2, 1, 3), "cpu")  # one uniform per (sample, channel, pixel)
    values = draws(logits.expand(n, 2, 5), 1, torch.tensor([2, 0]))  # (n, P=2)
    assert values.shape == (n, 2) and values.dtype == torch.long
    assert (values != 2).all()
    counts = torch.bincount(values.flatten(), minlength=5).double()
    expected = p.double() * 2 * n
    keep = expected > 0
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    assert chi2 < 21.1  # 3 degrees of freedom: the 0.9999 quantile
    # Each sub-pixel reads its own uniform: position 2 of channel 1 here, whatever else is drawn with it.
    alone = draws(logits.expand(n, 1, 5), 1, torch.tensor([2]))
    assert torch.equal(alone[:, 0], values[:, 0])
    # The extremes of u: a tiny u gives the first possible value, u = 1 the last one, never past the end.
    draws = Draws(2, (1, 1, 1), "cpu")
    draws.u[:, 0, 0] = torch.tensor([1e-30, 1.0])
    edge = draws(torch.tensor([[[float("-inf"), 0.0, 1.0, float("-inf")]]]).expand(2, 1, 4), 0, torch.tensor([0]))
    assert edge[:, 0].tolist() == [1, 2]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "naive"])
def test_non_finite_logits_stop_sampling_with_one_sentence(fast):
    from genzoo.errors import GenzooError
    from genzoo.models.autoregressive import Draws

    draws = Draws(3, (1, 1, 2), "cpu")
    bad = torch.tensor([[0.0, float("nan"), 1.0], [float("-inf")] * 3, [0.0, float("inf"), 1.0]])
    assert draws(bad[:, None], 0, torch.tensor([1]))[:, 0].tolist() == [3, 3, 3]  # levels: out of range
    model = small_model("pixelcnn", (1, 3, 3), levels=4)
    with torch.no_grad():
        model.net.head[-1].bias[1] = float("nan")  # as a diverged run leaves it
    with pytest.raises(GenzooError, match="NaN or infinite logits"):
        model.sample(2, fast=fast)


@pytest.mark.parametrize("name, key", [("pixelcnn", "kernel_size"), ("gated_pixelcnn", "first_kernel_size"),
                                       ("row_lstm", "state_kernel_size"), ("diagonal_bilstm", "first_kernel_size")])
def test_an_even_kernel_size_is_refused_with_its_config_key(name, key):
    from genzoo.errors import GenzooError

    with pytest.raises(GenzooError, match=rf"model\.net\.{key}=4 .* odd size, e.g. 3 or 5"):
        small_model(name, (1, 5, 5), **{key: 4})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 3, 3)], ids=["grey", "rgb"])
def test_sample_is_integer_in_range_and_seeded(name, shape):
    model = small_model(name, shape, levels=5)
    torch.manual_seed(3)
    a = model.sample(6)
    torch.manual_seed(3)
    b = model.sample(6)
    assert a.shape == (6, *shape)
    assert not a.is_floating_point() and a.min() >= 0 and a.max() <= 4
    assert torch.equal(a, b)


def recording_draws(records: list):
    """A ``Draws`` factory that also keeps (k, positions, cdf) of every draw, in call order, and checks the
    uniforms a sampler hands over. Every distribution's draws go through ``invert``, the categorical's too."""
    from genzoo.models.autoregressive import Draws

    class Recording(Draws):
        def invert(self, cdf, k, positions, u=None):
            records.append((k, positions.clone(), cdf.clone()))
            if u is not None:  # handed over by the sampler: they must be these sub-pixels' own
                assert torch.equal(u, self.u[:, k, positions])
            return super().invert(cdf, k, positions, u)

    return Recording


def full_pass_cdfs(model, x, y=None) -> torch.Tensor:
    """(n, C, H·W, levels): each sub-pixel's CDF from one full pass over the images x, its earlier channels
    read from x."""
    with torch.no_grad():
        out = model.logits(x, y)
    n, c = len(x), model.shape[0]
    params = out.flatten(1, -3).flatten(2).transpose(1, 2)  # (n, H·W, P)
    earlier = x.flatten(2).transpose(1, 2)  # (n, H·W, C)
    return torch.stack([model.distribution.cdf(params, k, earlier[..., :k]) for k in range(c)], dim=1)


def fast_cdf_gap(model, n: int, y=None) -> float:
    """Largest difference between the CDFs the fast sampler drew from and one full pass over its samples.

    By causality the full pass gives, at each sub-pixel, what the naive sampler computes at that step; a fast
    sampler that read a pixel before drawing it would differ here. Also pins that every sub-pixel is drawn exactly
    once."""
    records = []
    x = model.net.generate(n, model.class_labels(y), recording_draws(records), model.scale, model.shape)
    c, h, w = model.shape
    drawn = sorted((k, p) for k, positions, _ in records for p in positions.tolist())
    assert drawn == [(k, p) for k in range(c) for p in range(h * w)]
    full = full_pass_cdfs(model, x, y)
    return max((cdf - full[:, k, pos]).abs().max().item() for k, pos, cdf in records)


@pytest.mark.parametrize("name", MODELS)
def test_every_autoregressive_network_has_a_fast_sampler(name):
    assert callable(getattr(small_model(name, (1, 3, 3)).net, "generate", None))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 5, 6), (3, 4, 5)], ids=["grey", "rgb"])
def test_fast_sampler_draws_what_the_naive_sampler_draws(name, shape):
    model = small_model(name, shape, levels=5)
    torch.manual_seed(7)
    fast = model.sample(6)
    torch.manual_seed(7)
    naive = model.sample(6, fast=False)
    assert torch.equal(fast, naive)
    torch.manual_seed(8)
    assert fast_cdf_gap(model, 6) < 1e-5


@pytest.mark.parametrize("shape", [(1, 4, 5), (3, 3, 4)], ids=["grey", "rgb"])
def test_fast_sampler_of_the_conditional_gated_pixelcnn_follows_the_label(shape):
    torch.manual_seed(0)
    model = GatedPixelCNN(shape=shape, levels=4, num_classes=10, net=dict(channels=8, layers=3, head_channels=8),
                          conditional=True).eval()
    for y in (torch.tensor([0, 3, 3, 9]), None):  # None: the labels are drawn first, the same in both paths
        torch.manual_seed(5)
        fast = model.sample(4, y)
        torch.manual_seed(5)
        assert torch.equal(fast, model.sample(4, y, fast=False))
    assert fast_cdf_gap(model, 4, torch.tensor([1, 2, 3, 4])) < 1e-5


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "naive"])
def test_sampling_switches_dropout_off_and_restores_the_mode(fast):
    shape = (1, 3, 4)
    model = small_model("pixelcnn", shape, dropout=0.9).train()
    torch.manual_seed(2)
    a = model.sample(5, fast=fast)
    assert model.training
    model.eval()
    torch.manual_seed(2)
    assert torch.equal(a, model.sample(5, fast=fast))  # the same draws as in evaluation mode: no dropout
    assert not model.training


def test_conditional_gated_pixelcnn_uses_the_label():
    model = GatedPixelCNN(shape=(1, 4, 4), levels=3, num_classes=10, net=dict(channels=8, layers=2, head_channels=8),
                          conditional=True).eval()
    x = torch.randint(0, 3, (2, 1, 4, 4))
    with torch.no_grad():
        # The bias of the embedding is random at init, so two labels give two different likelihoods.
        a = model.log_likelihood(x, torch.tensor([0, 0]))
        b = model.log_likelihood(x, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)


def test_mask_a_hides_the_centre_and_mask_b_shows_it():
    a = MaskedConv2d(1, 1, 3, "A").mask[0, 0]
    b = MaskedConv2d(1, 1, 3, "B").mask[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("name", MODELS)
def test_any_model_config_builds_for_any_space(name):
    # The contract of DESIGN.md: instantiate(cfg.model, shape=..., levels=..., num_classes=...) builds the model.
    from importlib.resources import files

    cfg = OmegaConf.load(files("genzoo.conf") / "model" / f"{name}.yaml")
    model = instantiate(cfg, shape=(1, 3, 3), levels=2, num_classes=0)
    assert model.log_likelihood(torch.zeros(2, 1, 3, 3, dtype=torch.long)).shape == (2,)
