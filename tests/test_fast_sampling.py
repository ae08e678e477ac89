"""The cached samplers of PixelCNN and Gated PixelCNN (Ramachandran et al. 2017): each cached layer against the
convolution it replaces, then whole samplers against the naive one on deep networks and odd shapes."""

from __future__ import annotations

import pytest
import torch
from test_autoregressive import fast_cdf_gap

from genzoo.models import GatedPixelCNN, PixelCNN
from genzoo.nn.fast_pixelcnn import Wavefront, Window, geometry, pixelcnn_plan
from genzoo.nn.masked import MaskedConv2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kernel", [(7, 7), (3, 3), (1, 5), (5, 3)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("order", ["raster", "wavefront"])
def test_window_at_each_step_equals_the_masked_convolution(kernel, mask_type, order):
    # Filled a step at a time, as the sampler fills it: every window reads only pixels of earlier steps or its own
    # centre, and the cache's zero padding plays the convolution's. The wavefront's steps hold several pixels
    # (slope = reach right + 1), which must not read each other.
    torch.manual_seed(0)
    conv = MaskedConv2d(6, 9, kernel, mask_type, data_channels=3)
    h, w = 6, 11
    x = torch.randn(2, 6, h, w)  # (n, in, H, W)
    plan = Wavefront(h, w, w if order == "raster" else geometry(conv)[1] + 1, [geometry(conv)], "cpu")
    assert sorted(p for px in plan.pixels for p in px) == [(i, j) for i in range(h) for j in range(w)]
    if order == "wavefront" and kernel[1] < 7:
        assert max(len(px) for px in plan.pixels) > 1
    with torch.no_grad():
        full = conv(x)  # (n, out, H, W)
        window = Window(conv, 2, plan)
        for t, px in enumerate(plan.pixels):
            rows, cols = torch.tensor(px).T
            value = x[:, :, rows, cols].transpose(1, 2).reshape(-1, 6)  # (n·P, in), sample major
            want = full[:, :, rows, cols].transpose(1, 2).reshape(-1, 9)
            torch.testing.assert_close(window(value, t), want, atol=1e-5, rtol=1e-5)


def test_the_shipped_pixelcnn_samples_28x28_in_136_wavefront_steps():
    # Its 7×7 first layer reaches 3 columns right in the rows above, so pixel (i, j) goes at step j + 4i.
    model = PixelCNN(shape=(1, 28, 28), levels=4, net=dict(channels=8, blocks=2, head_channels=8))
    plan = pixelcnn_plan(model.net, (1, 28, 28), "cpu")
    assert len(plan.pixels) == 28 + 4 * 27
    assert all(j + 4 * i == t for t, px in enumerate(plan.pixels) for i, j in px)


def same_as_naive(model, n: int = 4, seed: int = 3) -> bool:
    torch.manual_seed(seed)
    fast = model.sample(n)
    torch.manual_seed(seed)
    return torch.equal(fast, model.sample(n, fast=False))


@pytest.mark.parametrize("bottleneck", [True, False], ids=["bottleneck", "full_width"])
def test_deep_pixelcnn_with_a_blind_spot_samples_as_the_naive_sampler(bottleneck):
    # Six blocks: the receptive field covers most rows above, and its blind spot (pinned in test_autoregressive)
    # must be reproduced, not filled, by the cache.
    torch.manual_seed(0)
    model = PixelCNN(shape=(1, 8, 9), levels=6, net=dict(channels=12, blocks=6, head_channels=16, dropout=0.3,
                                                         bottleneck=bottleneck)).eval()
    assert same_as_naive(model)
    assert fast_cdf_gap(model, 4) < 1e-5


@pytest.mark.parametrize("first, kernel", [(7, 1), (1, 3), (1, 1)], ids=["1x1_blocks", "1x1_first", "all_1x1"])
def test_pixelcnn_with_1x1_layers_samples_as_the_naive_sampler(first, kernel):
    # A 1×1 block has no window, so its residual sum is not fused into the last product; a 1×1 first layer is
    # still a window over the image cache; with no wider window at all, the wavefront's slope is 1.
    torch.manual_seed(0)
    model = PixelCNN(shape=(3, 5, 9), levels=4, net=dict(channels=12, blocks=2, kernel_size=kernel,
                                                         first_kernel_size=first, head_channels=8,
                                                         bottleneck=False)).eval()
    assert same_as_naive(model)
    assert fast_cdf_gap(model, 4) < 1e-5


@pytest.mark.parametrize("shape", [(1, 3, 7), (3, 1, 5), (2, 6, 1), (3, 2, 3)], ids=str)
@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_odd_shapes_and_kernels_wider_than_the_image(name, shape):
    torch.manual_seed(0)
    if name == "pixelcnn":
        model = PixelCNN(shape=shape, levels=3, net=dict(channels=12, blocks=2, kernel_size=5, head_channels=8))
    else:
        model = GatedPixelCNN(shape=shape, levels=3, net=dict(channels=12, layers=3, kernel_size=5, head_channels=8))
    model.eval()
    assert same_as_naive(model)
    assert fast_cdf_gap(model, 4) < 1e-5


def test_gated_pixelcnn_with_a_deep_vertical_stack():
    # Seven layers of 3-wide vertical kernels: row i's vertical input, computed once per row, reaches back through
    # every row above.
    torch.manual_seed(0)
    model = GatedPixelCNN(shape=(3, 7, 6), levels=4, net=dict(channels=12, layers=7, kernel_size=3, head_channels=8))
    model.eval()
    assert same_as_naive(model)
    assert fast_cdf_gap(model, 3) < 1e-5


def test_a_new_sample_uses_the_current_weights():
    # Nothing from an earlier call (masked weights, caches) may outlive a training step.
    torch.manual_seed(0)
    model = GatedPixelCNN(shape=(1, 4, 4), levels=4, net=dict(channels=8, layers=2, head_channels=8)).eval()
    torch.manual_seed(1)
    before = model.sample(8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert same_as_naive(model, n=8, seed=1)
    torch.manual_seed(1)
    assert not torch.equal(before, model.sample(8))


def test_samples_are_ordinary_tensors_and_the_thread_count_is_restored():
    torch.manual_seed(0)
    model = PixelCNN(shape=(1, 3, 3), levels=4, net=dict(channels=8, blocks=1, head_channels=8)).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the sampler runs on one thread, then gives the caller's count back
    try:
        x = model.sample(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert not x.is_inference()
    x[0] = 0  # a caller may write into its samples


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_a_planned_loop_neither_reads_the_host_nor_waits_for_it(name):
    # What a CUDA graph may record: with its plan made beforehand, the loop copies no Python data to the device
    # (torch.tensor(...): lift_fresh) and reads no value back (.item(), bool(tensor): _local_scalar_dense).
    from torch.utils._python_dispatch import TorchDispatchMode

    from genzoo.models.autoregressive import Draws
    from genzoo.nn.fast_pixelcnn import generate_gated_pixelcnn, generate_pixelcnn

    class Ops(TorchDispatchMode):
        seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    shape = (3, 4, 6)
    if name == "pixelcnn":
        model = PixelCNN(shape=shape, levels=4, net=dict(channels=12, blocks=2, head_channels=8))
        loop = generate_pixelcnn
    else:
        model = GatedPixelCNN(shape=shape, levels=4, num_classes=3, net=dict(channels=12, layers=2, head_channels=8),
                              conditional=True)
        loop = generate_gated_pixelcnn
    model.eval()
    y = torch.tensor([0, 2]) if name == "gated_pixelcnn" else None
    plan = loop.plan(model.net, shape, "cpu")
    with torch.inference_mode(), Ops() as ops:
        x = loop(model.net, 2, y, Draws, model.scale, shape, plan=plan)
    assert x.shape == (2, *shape)
    assert {"addmm", "searchsorted"} <= ops.seen  # the mode saw the loop's work
    assert not {"lift_fresh", "_local_scalar_dense", "item"} & ops.seen

