"""The two PixelRNNs: skewing, receptive fields, the shifted right-to-left direction, incremental sampling, and
the installed entry point end to end."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from genzoo.models import DiagonalBiLSTM, RowLSTM
from genzoo.nn.diagonal_bilstm import DiagonalBiLSTM as DiagonalBiLSTMLayer
from genzoo.nn.pixelrnn import skew, unskew

from causality import allowed_map, dependency_map
from test_autoregressive import full_pass_cdfs, recording_draws

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {"row_lstm": RowLSTM, "diagonal_bilstm": DiagonalBiLSTM}


def small(name: str, shape, levels: int = 4, **net):
    torch.manual_seed(0)
    net = {"hidden": 6, "layers": 2, "head_channels": 8, **net}
    return MODELS[name](shape=shape, levels=levels, num_classes=0, net=net).eval()


def input_dependencies(fn, x: torch.Tensor) -> torch.Tensor:
    """dep[i, j, i', j'] = 1 where some output channel at (i, j) of ``fn(x)`` changes with some input at (i', j')."""
    x = x.clone().requires_grad_(True)
    out = fn(x)  # (B, K, H, W)
    h, w = x.shape[2:]
    dep = torch.zeros(h, w, h, w, dtype=torch.bool)
    for i, j in itertools.product(range(h), range(w)):
        (grad,) = torch.autograd.grad(out[:, :, i, j].sum(), x, retain_graph=True)
        dep[i, j] = grad.abs().sum((0, 1)) > 0
    return dep


def row_lstm_context(h: int, w: int, layers: int, kernel: int, state_kernel: int = 3, first: int = 7):
    """ctx[i, j, i', j']: the pixels a grey Row LSTM's logits at (i, j) can read, derived from the layer rules alone.

    First layer (7×7, mask A): the ``first//2`` rows above within ``first//2`` columns either side, and the
    ``first//2`` pixels to the left. Each LSTM layer: h(i, j) reads its input at (i, j-kernel//2 … j) and
    h(i-1, j-state_kernel//2 … j+state_kernel//2); its output is added to its input (the residual).
    """
    a, k, s = first // 2, kernel // 2, state_kernel // 2
    feats = torch.zeros(h, w, h, w, dtype=torch.bool)
    for i, j in itertools.product(range(h), range(w)):
        feats[i, j, max(i - a, 0) : i, max(j - a, 0) : j + a + 1] = True
        feats[i, j, i, max(j - a, 0) : j] = True
    for _ in range(layers):
        state = torch.zeros_like(feats)
        for i, j in itertools.product(range(h), range(w)):
            state[i, j] = feats[i, max(j - k, 0) : j + 1].any(0)
            if i > 0:
                state[i, j] |= state[i - 1, max(j - s, 0) : j + s + 1].any(0)
        feats = feats | state
    return feats


# ---- skewing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(4, 6), (5, 3), (1, 4), (3, 1)])
def test_skew_moves_row_i_right_by_i_and_unskew_undoes_it(hw):
    h, w = hw
    x = torch.arange(1, h * w + 1, dtype=torch.float).view(1, 1, h, w).repeat(2, 3, 1, 1)
    s = skew(x)
    assert s.shape == (2, 3, h, h + w - 1)
    for i in range(h):
        assert torch.equal(s[:, :, i, i : i + w], x[:, :, i])  # row i starts at column i
        assert s[:, :, i, :i].abs().sum() == 0 and s[:, :, i, i + w :].abs().sum() == 0  # zeros elsewhere
    assert torch.equal(unskew(s, w), x)


# ---- receptive fields ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers,kernel", [(2, 3), (1, 5)])
def test_row_lstm_sees_exactly_the_triangle_its_layer_rules_give(layers, kernel):
    shape = (1, 7, 9)
    model = small("row_lstm", shape, layers=layers, kernel_size=kernel)
    dep = dependency_map(model, shape)[0, :, :, 0]  # (H, W, H, W)
    assert torch.equal(dep, row_lstm_context(7, 9, layers, kernel))
    earlier = allowed_map(shape)[0, :, :, 0]
    assert not (dep & ~earlier).any()
    assert (earlier & ~dep).any()  # not the whole past, unlike the Diagonal BiLSTM


def test_row_lstm_context_of_one_layer_is_a_triangle():
    # One layer, kernel 3, on a 5×15 image: what the logits at the bottom-middle pixel (4, 7) read. Row 4-r reads
    # columns 7-4-r … 7+2+r: the 7×7 first layer's reach, widened by one column per row up on either side.
    shape = (1, 5, 15)
    dep = dependency_map(small("row_lstm", shape, layers=1), shape)[0, 4, 7, 0]  # (H, W)
    picture = ["".join("#" if seen else "." for seen in row) for row in dep.tolist()]
    assert picture == [
        "##############.",
        "#############..",
        ".###########...",
        "..#########....",
        "...####........",
    ]


@pytest.mark.parametrize("shape", [(1, 5, 6), (3, 4, 6)], ids=["grey", "rgb"])
def test_diagonal_bilstm_sees_every_earlier_subpixel_but_the_previous_rows_last_from_a_rows_start(shape):
    c, h, w = shape
    model = small("diagonal_bilstm", shape, layers=2)
    dep, earlier = dependency_map(model, shape), allowed_map(shape)
    assert torch.equal(dep[c - 1, h - 1, w - 1], earlier[c - 1, h - 1, w - 1])  # the last position sees all
    # No feature of row i depends on that row's last sub-pixel (channel C-1 of (i, W-1): mask A hides it there,
    # and nothing lies right of it), so the shifted right-to-left direction cannot carry it; only the first layer's
    # 7×7 kernel brings it into row i+1, at columns ≥ W-1-3. So (i+1, j) for j < W-4 misses it: pinned exactly.
    gap = torch.zeros_like(earlier)
    for i, j in itertools.product(range(h - 1), range(w - 1 - 3)):
        gap[:, i + 1, j, c - 1, i, w - 1] = True
    assert torch.equal(dep, earlier & ~gap)


def test_left_direction_reads_up_left_and_shifted_right_direction_only_rows_above():
    torch.manual_seed(0)
    h, w, hid = 5, 6, 3
    layer = DiagonalBiLSTMLayer(2 * hid, hid, data_channels=1)
    x = torch.randn(2, 2 * hid, h, w)
    i_, j_ = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    left_rows, right_rows = slice(0, 4 * hid), slice(4 * hid, 8 * hid)
    for silenced, expect in ((right_rows, "left"), (left_rows, "right")):
        probe = DiagonalBiLSTMLayer(2 * hid, hid, data_channels=1)
        probe.load_state_dict(layer.state_dict())
        with torch.no_grad():  # silence the other direction: its gates then hold only biases
            probe.input_to_state.weight[silenced] = 0
            probe.state_to_state.weight[silenced] = 0
        dep = input_dependencies(lambda z, p=probe: p(z) - z, x)  # without the residual's identity path
        for i, j in itertools.product(range(h), range(w)):
            if expect == "left":  # every (i', j') with i' ≤ i and j' ≤ j, the pixel itself included
                want = (i_ <= i) & (j_ <= j)
            else:  # shifted down one row: rows strictly above, columns j and right of it; never row i
                want = (i_ < i) & (j_ >= j)
            assert torch.equal(dep[i, j], want), (expect, i, j)


# ---- incremental sampling --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 4, 6), (3, 3, 4)], ids=["grey", "rgb"])
def test_generate_gives_the_full_networks_logits_and_the_naive_samples(name, shape):
    model = small(name, shape, levels=5)
    c, h, w = shape
    records = []
    torch.manual_seed(7)
    fast = model.net.generate(3, None, recording_draws(records), model.scale, shape)
    assert fast.shape == (3, *shape) and fast.dtype == torch.long
    # one draw per sub-pixel, in raster then channel order: the LSTM state is carried along it
    assert [(k, pos.tolist()) for k, pos, _ in records] == [(k, [i * w + j]) for i in range(h) for j in range(w)
                                                              for k in range(c)]
    full = full_pass_cdfs(model, fast)  # (3, C, H·W, levels): the drawn image fed back through the full network
    for k, pos, cdf in records:
        torch.testing.assert_close(cdf[:, 0], full[:, k, pos.item()], atol=1e-5, rtol=0)
    # the naive sampler: one pass of the full network per sub-pixel, from the same seed
    torch.manual_seed(7)
    assert torch.equal(fast, model.sample_naive(3))


# ---- the installed entry point ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_genzoo_train_smoke_run_on_digits(name, cli, tmp_path):
    run = cli.train(f"model={name}", "debug=smoke", "logger=csv", "model.net.hidden=4", "model.net.layers=1",
                    "model.net.head_channels=8", "~callbacks.fidelity", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    metrics = json.loads((run.run_dir() / "metrics.json").read_text())
    assert 0 < metrics["test/bpd"] < math.log2(17) + 1
    assert list((run.run_dir() / "samples").glob("*.png"))
