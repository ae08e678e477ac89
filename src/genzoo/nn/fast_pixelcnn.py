"""Cached sampling for PixelCNN and Gated PixelCNN (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models").

The naive sampler runs the whole network once per sub-pixel, although drawing pixel p changes nothing but the
activations whose receptive field contains p. Here every layer keeps a cache of its input map, and each step
computes every layer's output at the one position being generated, from the cached inputs inside the kernel
window:

    out_l(p) = W_l · window(in_l, p) + b_l,        in_{l+1}(p) = f(out_l(p)).

This is enough because an activation at position q depends only on sub-pixels at or before q in raster order: once
pixel q is drawn, every layer's value at q is final, and every window around a later position reads only
positions the sampler has already finished (rows below the centre and columns right of it are masked out, so
their cache slots are read but multiplied by zero). Within a pixel the sub-pixels are drawn in channel order:
the column at p is recomputed once per channel, and the value computed for the last channel is final for every
channel group, since no group reads the last data channel at its own position. The work over a whole sample is
about one full network pass, against H·W·C passes for the naive sampler.

Gated PixelCNN's vertical stack at row i reads only rows above i, so its activations for row i are computed a
whole row at a time (each exactly once) when row i starts; the horizontal stack and the 1×1 layers are computed
per position. Dropout is the identity (evaluation mode), as in the naive sampler.

On a GPU each step is a few dozen dependent tiny kernels; launched one by one from Python they took 1 ms a step
on an H100, and the cached sampler was only 3× faster than the naive one. There the whole loop is recorded once as a CUDA graph (per network, batch size, shape and label
use) and replayed on later calls: the first call pays for the recording, and the graph keeps its caches' memory
until the network is freed or another size is asked for. A replay reads the parameters in place, so it always
uses the current weights, and draws from the same RNG stream as the eager loop.

Left out, relative to the paper: its queues (this keeps full per-layer maps instead, simpler and small at these
sizes), dilated convolutions, and strided/up-sampling layers (these networks have none). Not done either: fusing a
step's kernels, which is what a GPU step now costs (about 0.2 ms for the shipped PixelCNN at batch 256).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.masked import masked_weight

Draw = Callable[[Tensor], Tensor]


@contextmanager
def sampling_mode(device: torch.device) -> Iterator[None]:
    """Inference mode, and on CPU one torch thread: each step is a chain of tiny matrix products, and a second
    thread only adds synchronisation (on a busy 2-core machine it made sampling 15× slower)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


Loop = Callable[..., Tensor]  # (net, n, y, draw, scale, shape) -> (n, C, H, W) samples
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> its recorded loop (weak: no leak)


def sample_with_caches(net: nn.Module, loop: Loop, n: int, y, draw: Draw, scale, shape) -> Tensor:
    """Runs a cached sampling loop: replayed from a CUDA graph on a GPU when ``draw`` allows it, else eagerly."""
    device = next(net.parameters()).device
    with sampling_mode(device):
        if device.type == "cuda" and getattr(draw, "capturable", False):
            x = GraphedLoop.replay(net, loop, n, y, draw, scale, tuple(shape))
        else:
            x = loop(net, n, y, draw, scale, tuple(shape))
    return x.clone()  # a plain tensor that the caller owns (not the graph's output buffer, not an inference one)


class GraphedLoop:
    """A whole sampling loop recorded as a CUDA graph, with its label input and sample output buffers."""

    def __init__(self, key, net: nn.Module, loop: Loop, n: int, y, draw: Draw, scale, shape):
        self.key = key
        self.y = None if y is None else y.clone()
        # Warm up on a side stream (library handles and workspaces must exist before recording) on one row, and
        # give back the RNG state it used, so the samples stay those of the eager loop.
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loop(net, n, self.y, draw, scale, (shape[0], 1, shape[2]))
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.set_rng_state(rng)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records only: the kernels run at replay
            self.x = loop(net, n, self.y, draw, scale, shape)

    @classmethod
    def replay(cls, net: nn.Module, loop: Loop, n: int, y, draw: Draw, scale, shape) -> Tensor:
        # Parameters moved or replaced mean new addresses: record again rather than read freed memory.
        key = (loop, n, shape, y is None, draw, scale, tuple(p.data_ptr() for p in net.parameters()))
        graphed = _GRAPHS.get(net)
        if graphed is None or graphed.key != key:
            _GRAPHS.pop(net, None)  # free the old graph's memory before recording a new one
            graphed = _GRAPHS[net] = cls(key, net, loop, n, y, draw, scale, shape)
        elif y is not None:
            graphed.y.copy_(y)
        graphed.graph.replay()
        return graphed.x


def affine(value: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """value @ weight_t + bias. ``addmm`` on a transposed contiguous weight: on an H100, F.linear picked a split-K
    kernel 4× slower for the (256, 64) × (64, 64) products of a sampling step."""
    return value @ weight_t if bias is None else torch.addmm(bias, value, weight_t)


class Pointwise:
    """A (masked) 1×1 convolution at one position: a matrix product."""

    def __init__(self, conv: nn.Conv2d):
        self.weight_t = masked_weight(conv).flatten(1).t().contiguous()  # (in, out)
        self.bias = conv.bias

    def __call__(self, value: Tensor, i: int, j: int) -> Tensor:
        return affine(value, self.weight_t, self.bias)


class Window:
    """A masked kh×kw convolution evaluated at one position at a time over a cache of its input map.

    The cache is channels-last and zero-padded above, left and right, so a window is one slice and the padding
    gives the same zeros as the convolution's own padding. Kernel rows below the centre are all masked: they are
    cropped from the weight and never read. ``relu_input``: the layer reads ReLU(value), written straight into
    the cache (one kernel less per step, which is what a GPU step is made of).
    """

    def __init__(self, conv: nn.Conv2d, n: int, height: int, width: int, relu_input: bool = False):
        self.relu_input = relu_input
        kh, kw = conv.kernel_size
        self.top, self.left, self.kw = kh // 2, kw // 2, kw
        weight = masked_weight(conv)[:, :, : self.top + 1]  # (out, in, top+1, kw)
        self.weight_t = weight.permute(2, 3, 1, 0).reshape(-1, len(weight))  # ((top+1)·kw·in, out), window layout
        self.bias = conv.bias
        self.cache = weight.new_zeros(n, height + self.top, width + 2 * self.left, conv.in_channels)

    def write(self, value: Tensor, i: int, j: int) -> None:
        slot = self.cache[:, i + self.top, j + self.left]  # (n, in): the input at (i, j)
        if self.relu_input:
            torch.clamp_min(value, 0.0, out=slot)
        else:
            slot.copy_(value)

    def at(self, i: int, j: int) -> Tensor:
        window = self.cache[:, i : i + self.top + 1, j : j + self.kw]  # (n, top+1, kw, in)
        return affine(window.reshape(len(window), -1), self.weight_t, self.bias)

    def __call__(self, value: Tensor, i: int, j: int) -> Tensor:
        self.write(value, i, j)
        return self.at(i, j)


def relu(value: Tensor, i: int, j: int) -> Tensor:
    return F.relu(value)


def compile_layers(layers: nn.Sequential, n: int, height: int, width: int) -> list:
    """The per-position steps of a Sequential of ReLUs, dropouts and (masked) convolutions."""
    steps = []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            steps.append(relu)
        elif isinstance(layer, nn.Dropout):
            continue  # evaluation mode: the identity
        elif isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):
            steps.append(Pointwise(layer))
        elif isinstance(layer, nn.Conv2d):
            after_relu = bool(steps) and steps[-1] is relu
            if after_relu:
                steps.pop()  # the window applies it as it writes its cache
            steps.append(Window(layer, n, height, width, relu_input=after_relu))
        else:
            raise TypeError(f"no cached version of {type(layer).__name__}")
    return steps


def run(steps: list, value: Tensor, i: int, j: int) -> Tensor:
    for step in steps:
        value = step(value, i, j)
    return value


def generate_pixelcnn(net, n: int, y: Tensor | None, draw: Draw, scale: Callable[[Tensor], Tensor], shape) -> Tensor:
    """(n, C, H, W) integer samples of a ``PixelCNNNet``, one column of activations per sub-pixel (no labels)."""
    c, h, w = shape
    device = net.input.weight.device
    first = Window(net.input, n, h, w)
    blocks = [compile_layers(block.net, n, h, w) for block in net.blocks]
    head = compile_layers(net.head, n, h, w)
    x = torch.zeros(n, c, h, w, dtype=torch.long, device=device)
    for i in range(h):
        for j in range(w):
            for k in range(c):
                # The image cache holds this pixel's channels < k (mask A shows no others): (n, channels).
                s = first.at(i, j)
                for block in blocks:
                    s = s + run(block, s, i, j)
                logits = run(head, s, i, j).view(n, c, net.levels)  # (n, C, levels)
                x[:, k, i, j] = draw(logits[:, k])
                first.write(scale(x[:, :, i, j]), i, j)
            # Now every layer's value at (i, j) is final: no channel group reads its own data channel there.
    return x


def gate(value: Tensor) -> Tensor:
    f, g = value.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer:
    """One ``GatedBlock`` for sampling: its vertical stack a row at a time, its horizontal stack per position."""

    def __init__(self, block, n: int, height: int, width: int, y: Tensor | None):
        self.block, self.first = block, block.first
        v = block.v_conv
        # The vertical input, NCHW, padded so that row i's kernel rows (strictly above i for the first layer,
        # up to i otherwise) are always padded rows i … i+pad.
        self.v_top = v.pad + 1 if v.strict else v.pad
        self.v_cache = v.conv.weight.new_zeros(n, v.conv.in_channels, height + self.v_top, width + 2 * v.pad)
        self.h_conv = Window(block.h_conv, n, height, width)
        self.h_out, self.skip = Pointwise(block.h_out), Pointwise(block.skip)
        self.bias_v = self.bias_h = None
        if block.embed is not None and y is not None:
            self.bias_v, self.bias_h = block.embed(y).chunk(2, dim=1)  # (n, 2h) each
        self.v_to_h_row = None  # (n, W, 2h): the vertical stack's contribution to row i's horizontal stack

    def write_vertical_input(self, row: Tensor, i: int) -> None:
        """Row i of this layer's vertical input, (n, in, W), once it is final."""
        p = self.block.v_conv.pad
        self.v_cache[:, :, i + self.v_top, p : p + row.shape[-1]] = row

    def vertical_row(self, i: int, need_output: bool) -> Tensor | None:
        """Computes row i of the vertical stack (its input rows are final); returns the gated row, (n, h, W)."""
        block = self.block
        slab = self.v_cache[:, :, i : i + block.v_conv.pad + 1]  # (n, in, pad+1, W+2·pad)
        v_pre = block.v_conv.conv(slab)  # (n, 2h, 1, W)
        self.v_to_h_row = block.v_to_h(v_pre)[:, :, 0].transpose(1, 2)  # (n, W, 2h)
        if not need_output:
            return None
        v_pre = v_pre[:, :, 0]
        if self.bias_v is not None:
            v_pre = v_pre + self.bias_v[:, :, None]
        return gate(v_pre)  # (n, h, W)

    def horizontal(self, h_in: Tensor | None, i: int, j: int) -> tuple[Tensor, Tensor]:
        """The horizontal stack at (i, j): its new value and its skip output, each (n, h).

        The first layer reads the image, which the sampler writes into its cache after each draw (``h_in``
        None)."""
        h_pre = (self.h_conv.at(i, j) if self.first else self.h_conv(h_in, i, j)) + self.v_to_h_row[:, j]
        if self.bias_h is not None:
            h_pre = h_pre + self.bias_h
        gated = gate(h_pre)
        h_out = self.h_out(gated, i, j)
        return (h_out if self.first else h_in + h_out), self.skip(gated, i, j)


def generate_gated_pixelcnn(
    net, n: int, y: Tensor | None, draw: Draw, scale: Callable[[Tensor], Tensor], shape
) -> Tensor:
    """(n, C, H, W) integer samples of a ``GatedPixelCNNNet``."""
    c, h, w = shape
    device = net.head[1].weight.device
    layers = [GatedLayer(block, n, h, w, y) for block in net.layers]
    head = compile_layers(net.head, n, h, w)
    x = torch.zeros(n, c, h, w, dtype=torch.long, device=device)
    for i in range(h):
        if i > 0:
            layers[0].write_vertical_input(scale(x[:, :, i - 1]), i - 1)  # the image's row i-1 is drawn
        for depth, layer in enumerate(layers):
            last = depth == len(layers) - 1
            v_row = layer.vertical_row(i, need_output=not last)  # the last layer's vertical output feeds nothing
            if not last:
                layers[depth + 1].write_vertical_input(v_row, i)
        for j in range(w):
            for k in range(c):
                hor, skip = None, None
                for layer in layers:
                    hor, s = layer.horizontal(hor, i, j)
                    skip = s if skip is None else skip + s  # (n, h)
                logits = run(head, skip, i, j).view(n, c, net.levels)  # (n, C, levels)
                x[:, k, i, j] = draw(logits[:, k])
                layers[0].h_conv.write(scale(x[:, :, i, j]), i, j)  # for channel k+1 and the pixels to the right
    return x
