"""PixelCNN++: what its shifted streams see, sizes not divisible by 4, its layers' cached forms, and the cached
sampler against the naive one. (Causality, normalisation and seeding are in the shared tests of
test_autoregressive.py, parametrised over every autoregressive model.)"""

from __future__ import annotations

import pytest
import torch

from genzoo.models import PixelCNNPP
from genzoo.models.autoregressive import Draws
from genzoo.nn.fast_pixelcnn_pp import Plan
from genzoo.nn.pixelcnn_pp import ShiftedConv

from causality import allowed_map, dependency_map
from test_autoregressive import fast_cdf_gap

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(shape, levels=5, num_classes=0, conditional=False, **net):
    torch.manual_seed(0)
    options = dict(channels=6, resnets=1, dropout=0.0) | net
    return PixelCNNPP(shape=shape, levels=levels, num_classes=num_classes, net=options, components=3,
                      conditional=conditional).eval()


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 6, 5)], ids=["rgb", "grey-odd"])
def test_every_sub_pixel_sees_all_earlier_ones_and_within_a_pixel_exactly_the_earlier_channels(shape):
    # G's distribution moves with R (the coefficients, the re-weighted components), B's with R and G; none with
    # itself or later; and three resolutions reach every earlier pixel: no blind spot.
    model = small(shape, resnets=2)
    dep, allowed = dependency_map(model, shape), allowed_map(shape)
    assert torch.equal(dep, allowed), (dep ^ allowed).nonzero().tolist()[:5]


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (9, 6), (1, 1)])
def test_sizes_not_divisible_by_four_are_padded_and_cropped_back(size):
    shape = (3, *size)
    model = small(shape)
    x = torch.randint(5, (2, *shape))
    out = model.logits(x)
    assert out.shape == (2, model.distribution.params, *size)
    assert model.log_likelihood(x).shape == (2,) and torch.isfinite(model.log_likelihood(x)).all()
    assert model.net.padded_size(*size) == tuple(4 * -(-s // 4) for s in size)


@pytest.mark.parametrize("kind", ["down", "down_right"])
@pytest.mark.parametrize("stride, transposed, shift", [(1, False, (0, 0)), (1, False, (1, 0)), (1, False, (0, 1)),
                                                       (2, False, (0, 0)), (2, True, (0, 0))])
def test_a_shifted_convolution_is_the_window_the_cached_sampler_reads(kind, stride, transposed, shift):
    torch.manual_seed(0)
    kernel = (2, 3) if kind == "down" else (2, 2)
    conv = ShiftedConv(3, 4, kernel, kind, stride=stride, transposed=transposed, shift=shift)
    x = torch.randn(2, 3, 4, 6)
    full = conv(x)
    h, w = full.shape[-2:]
    assert (h, w) == conv.out_size(4, 6)
    window = conv.window((h, w), (4, 6))  # (H·W, taps) slots of the input, 0 for zeros
    cache = torch.cat([torch.zeros(2, 1, 3), x.flatten(2).transpose(1, 2)], dim=1)  # (2, 1 + 24, 3)
    weight = conv.window_weight().permute(2, 3, 1, 0).reshape(-1, 4)
    out = cache[:, window.flatten()].reshape(2, h * w, -1) @ weight + conv.conv.bias
    torch.testing.assert_close(out.transpose(1, 2).reshape(2, 4, h, w), full, atol=1e-5, rtol=1e-5)


def test_every_activation_is_computed_once_and_only_after_what_it_reads():
    shape = (3, 5, 6)
    model = small(shape, resnets=2)
    plan = Plan(model.net, shape, torch.device("cpu"))
    seen = {}  # (instruction, slot) -> step
    for t, work in enumerate(plan.steps):
        for step in work:
            for slot in step.slots.tolist():
                assert (step.instruction, slot) not in seen
                seen[step.instruction, slot] = t
    # the mixture's parameters of every real pixel, by the step that draws it
    head = next(i for i, ins in enumerate(plan.program) if ins.out.id == plan.output.id)
    wp = plan.padded[1]
    for p in range(5 * 6):
        i, j = divmod(p, 6)
        assert seen[head, 1 + i * wp + j] <= p


@pytest.mark.parametrize("shape, levels", [((3, 5, 6), 256), ((1, 6, 5), 17)], ids=["rgb-256", "grey-17"])
def test_cached_sampler_draws_the_naive_samples(shape, levels):
    model = small(shape, levels=levels)
    torch.manual_seed(3)
    fast = model.sample(4)
    torch.manual_seed(3)
    naive = model.sample(4, fast=False)
    assert torch.equal(fast, naive)
    assert fast_cdf_gap(model, 3) < 1e-5


def test_the_conditional_model_uses_the_label_in_both_samplers():
    shape = (3, 4, 4)
    model = small(shape, num_classes=10, conditional=True)
    x = torch.randint(5, (2, *shape))
    assert not torch.allclose(model.log_likelihood(x, torch.tensor([0, 0])), model.log_likelihood(x, torch.tensor([7, 7])))
    y = torch.tensor([1, 1, 8, 8])
    torch.manual_seed(4)
    fast = model.sample(4, y)
    torch.manual_seed(4)
    assert torch.equal(fast, model.sample(4, y, fast=False))
    assert fast_cdf_gap(model, 4, y) < 1e-5


def test_the_naive_sampler_runs_the_network_once_per_pixel_not_per_channel():
    shape = (3, 2, 3)
    model = small(shape)
    calls = []
    model.net.register_forward_hook(lambda *args: calls.append(1))
    model.sample_naive(2)
    assert len(calls) == 2 * 3


def test_draws_invert_the_mixture_cdf_with_the_sub_pixels_own_uniforms():
    model = small((3, 2, 2), levels=256)
    torch.manual_seed(0)
    draws = Draws(5, (3, 2, 2), "cpu")
    params = torch.randn(5, 1, model.distribution.params)
    cdf = model.distribution.cdf(params, 0)
    values = draws.invert(cdf, 0, torch.tensor([3]))
    # the smallest level whose CDF reaches u: the level below does not
    u = draws.u[:, 0, 3]
    reached = cdf[:, 0].gather(1, values) >= (u * cdf[:, 0, -1])[:, None] - 1e-7
    below = torch.where(values > 0, cdf[:, 0].gather(1, (values - 1).clamp(min=0)), torch.zeros_like(u[:, None]))
    assert reached.all() and (below < u[:, None] * cdf[:, 0, -1:]).all()


# ---- the installed entry point ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("data", ["digits", "patches"])
def test_genzoo_train_smoke_run(data, cli, tmp_path):
    import json
    import math

    run = cli.train("model=pixelcnn_pp", f"data={data}", "debug=smoke", "logger=csv", "model.net.channels=8",
                    "model.net.resnets=1", "~callbacks.fidelity", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    metrics = json.loads((run.run_dir() / "metrics.json").read_text())
    levels = 17 if data == "digits" else 256
    assert 0 < metrics["test/bpd"] < math.log2(levels) + 1
    assert list((run.run_dir() / "samples").glob("*.png"))
