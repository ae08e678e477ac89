"""Cached sampling for PixelCNN and Gated PixelCNN (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models").

The naive sampler runs the whole network once per sub-pixel, although drawing pixel p changes nothing but the
activations whose receptive field contains p. Here every layer keeps a cache of its input map, and each step
computes every layer's output only at the pixels being generated, from the cached inputs inside the kernel
window:

    out_l(p) = W_l · window(in_l, p) + b_l,        in_{l+1}(p) = f(out_l(p)).

This is enough because an activation at position q depends only on sub-pixels at or before q in raster order: once
pixel q is drawn, every layer's value at q is final, and every window around a later position reads only
positions the sampler has already finished (rows below the centre and columns right of it are masked out, so
their cache slots are read but multiplied by zero). Within a pixel the sub-pixels are drawn in channel order:
the column at p is recomputed once per channel, and the value computed for the last channel is final for every
channel group, since no group reads the last data channel at its own position. The work over a whole sample is
about one full network pass, against H·W·C passes for the naive sampler.

PixelCNN's pixels need not go one at a time. Its windows reach only a few columns right in the rows above, so a
pixel is independent of the pixels a few columns further right in the row above, and a diagonal wavefront of them
is computed as one batch (``Wavefront``): 136 steps instead of 784 for 28×28 with the shipped network. Each
sub-pixel is still drawn from its own uniform (``genzoo.models.autoregressive.Draws``), so the samples are the
naive sampler's.

Gated PixelCNN's vertical stack at row i reads every column of the rows above, so it goes in raster order; its
activations for row i are computed a whole row at a time (each exactly once) when row i starts, and the
horizontal stack and the 1×1 layers per pixel. Dropout is the identity (evaluation mode), as in the naive sampler.

On a GPU a step is a few dozen dependent small kernels, one per tensor operation. ``benchmarks/sampling.py``
counts them: 5,902 for a batch of the shipped PixelCNN at 1×28×28, where the one-pixel-a-step loop this replaced
ran 32,167. Launched one by one from Python, their launch cost outweighs their work, so the whole loop is recorded once
as a CUDA graph (per network, batch size, shape and label use) and replayed on later calls: the first call pays
for a warm-up run and the recording, and the graph keeps its caches' memory until the network is freed or another
size is asked for. A replay reads the parameters in place, so it always uses the current weights, and draws from
the same RNG stream as the eager loop.

Left out, relative to the paper: its queues (this keeps full per-layer maps instead, simpler and small at these
sizes), dilated convolutions, and strided/up-sampling layers (these networks have none). Not done either: fusing
the kernels of a step into one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.masked import MaskedConv2d, masked_weight

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


Loop = Callable[..., Tensor]  # (net, n, y, new_draws, scale, shape, plan=None) -> (n, C, H, W) samples
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> its recorded loop (weak: no leak)


def sample_with_caches(net: nn.Module, loop: Loop, n: int, y, new_draws, scale, shape) -> Tensor:
    """Runs a cached sampling loop: replayed from a CUDA graph on a GPU when the draws allow it, else eagerly."""
    device = next(net.parameters()).device
    with sampling_mode(device):
        if device.type == "cuda" and getattr(new_draws, "capturable", False):
            x = GraphedLoop.replay(net, loop, n, y, new_draws, scale, tuple(shape))
        else:
            x = loop(net, n, y, new_draws, scale, tuple(shape))
    return x.clone()  # a plain tensor that the caller owns (not the graph's output buffer, not an inference one)


class GraphedLoop:
    """A whole sampling loop recorded as a CUDA graph, with its label input and sample output buffers."""

    def __init__(self, key, net: nn.Module, loop: Loop, n: int, y, new_draws, scale, shape):
        self.key = key
        self.y = None if y is None else y.clone()
        # Index tensors are copied from the host, which a recording may not do: make them first.
        self.plan = loop.plan(net, shape, next(net.parameters()).device)
        # Warm up on a side stream (library handles, workspaces and every product's shape must have been seen
        # before recording) with the same plan, and give back the RNG state it used, so the samples stay those of
        # the eager loop.
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loop(net, n, self.y, new_draws, scale, shape, plan=self.plan)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.set_rng_state(rng)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records only: the kernels run at replay
            self.x = loop(net, n, self.y, new_draws, scale, shape, plan=self.plan)

    @classmethod
    def replay(cls, net: nn.Module, loop: Loop, n: int, y, new_draws, scale, shape) -> Tensor:
        # Parameters moved or replaced mean new addresses: record again rather than read freed memory.
        key = (loop, n, shape, y is None, new_draws, scale, tuple(p.data_ptr() for p in net.parameters()))
        graphed = _GRAPHS.get(net)
        if graphed is None or graphed.key != key:
            _GRAPHS.pop(net, None)  # free the old graph's memory before recording a new one
            graphed = _GRAPHS[net] = cls(key, net, loop, n, y, new_draws, scale, shape)
        elif y is not None:
            graphed.y.copy_(y)
        graphed.graph.replay()
        return graphed.x


class Wavefront:
    """The order of a cached loop: pixel (i, j) is computed at step t = j + slope·i, with every other pixel of
    that step, as one batch.

    A masked window reads, in the rows above, only columns up to ``left`` to the right of the centre, and in its
    own row only the columns left of it. So with slope > left for every window, whatever a pixel's windows read
    (i - r, j + c with c ≤ left < slope·r, or i, j - c) was computed at an earlier step, and no two pixels of one
    step read each other. Pixels never in any window of each other are independent, which is what the PixelCNN's
    blind spot gives: its 7×7 first layer sets slope 4, so 1×28×28 takes 136 steps of up to 7 pixels instead of
    784 steps of one. ``slope = W`` is raster order, one pixel a step.

    Caches keep pixels in this order, after one slot of zeros that stands for the padding: (n, 1 + H·W, channels),
    so a step writes one slice, ``slots[t]``, and gathers its windows with one index, ``windows[geometry][t]``.
    Every index is made here, up front: a CUDA graph may not copy from the host while it records.
    """

    def __init__(self, height: int, width: int, slope: int, windows, device: torch.device):
        self.height, self.width = height, width
        slope = max(1, min(slope, width))  # a larger slope would only add empty steps
        self.pixels = [
            [(i, t - slope * i) for i in range(height) if 0 <= t - slope * i < width]
            for t in range(width + slope * (height - 1))
        ]
        self.slot = {}  # (i, j) -> its cache slot (0 is the padding)
        self.slots = []  # per step, a slice of slots
        for px in self.pixels:
            start = len(self.slot) + 1
            self.slot.update((p, start + q) for q, p in enumerate(px))
            self.slots.append(slice(start, start + len(px)))
        raster = [i * width + j for px in self.pixels for i, j in px]
        self.order = torch.tensor(raster, device=device)  # slot s + 1 holds raster pixel order[s]
        self.positions = [self.order[sl.start - 1 : sl.stop - 1] for sl in self.slots]  # per step, (P,) i·W + j
        self.to_raster = torch.argsort(self.order)  # raster pixel p is at slot to_raster[p] + 1
        self.windows = {geometry: self.window_indices(*geometry, device) for geometry in set(windows)}

    def window_indices(self, top: int, left: int, kw: int, device) -> list[Tensor]:
        """Per step, the cache slots of its pixels' windows, (P·(top+1)·kw,): rows i-top … i, columns j-left …
        j-left+kw-1, padding (and the masked pixels below the image) at slot 0."""
        return [
            torch.tensor(
                [self.slot.get((i - top + r, j - left + c), 0) for i, j in px for r in range(top + 1)
                 for c in range(kw)],
                device=device,
            )
            for px in self.pixels
        ]


def geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    """(top, left, kw) of a masked convolution's window: the kernel rows down to the centre row."""
    kh, kw = conv.kernel_size
    return kh // 2, kw // 2, kw


def affine(value: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """value @ weight_t + bias. ``addmm`` on a transposed contiguous weight: on an H100, F.linear picked a split-K
    kernel 4× slower for the (256, 64) × (64, 64) products of a sampling step."""
    return value @ weight_t if bias is None else torch.addmm(bias, value, weight_t)


class Pointwise:
    """A (masked) 1×1 convolution at the pixels of a step: a matrix product."""

    def __init__(self, conv: nn.Conv2d):
        self.weight_t = masked_weight(conv).flatten(1).t().contiguous()  # (in, out)
        self.bias = conv.bias

    def __call__(self, value: Tensor, t: int) -> Tensor:
        return affine(value, self.weight_t, self.bias)


class Window:
    """A masked kh×kw convolution evaluated at a step's pixels over a cache of its input map (see ``Wavefront``).

    Kernel rows below the centre are all masked: they are cropped from the weight and never read. Values are
    (n·P, channels), sample major. ``relu_input``: the layer reads ReLU(value), applied as the value is written
    (one kernel, which is what a GPU step is made of).
    """

    def __init__(self, conv: nn.Conv2d, n: int, plan: Wavefront, relu_input: bool = False):
        self.relu_input = relu_input
        top, left, kw = geometry(conv)
        weight = masked_weight(conv)[:, :, : top + 1]  # (out, in, top+1, kw)
        self.weight_t = weight.permute(2, 3, 1, 0).reshape(-1, len(weight))  # ((top+1)·kw·in, out), window layout
        self.bias = conv.bias
        self.slots, self.windows = plan.slots, plan.windows[top, left, kw]
        self.cache = weight.new_zeros(n, 1 + plan.height * plan.width, conv.in_channels)

    def write(self, value: Tensor, t: int) -> None:
        """The input at step t's pixels, (n·P, in)."""
        slots = self.cache[:, self.slots[t]]  # (n, P, in)
        value = value.view(slots.shape)
        if self.relu_input:
            torch.clamp_min(value, 0.0, out=slots)
        else:
            slots.copy_(value)

    def write_channel(self, value: Tensor, k: int, t: int) -> None:
        """Input channel k at step t's pixels, (n, P): the image, one sub-pixel at a time."""
        self.cache[:, self.slots[t], k] = value

    def at(self, t: int) -> Tensor:
        window = self.cache.index_select(1, self.windows[t])  # (n, P·(top+1)·kw, in)
        return affine(window.view(-1, len(self.weight_t)), self.weight_t, self.bias)  # (n·P, out)

    def __call__(self, value: Tensor, t: int) -> Tensor:
        self.write(value, t)
        return self.at(t)


class RowWindow:
    """A masked 1×k convolution (the Gated PixelCNN's horizontal stack) at one pixel a step, in raster order.

    Its window, columns j - left … j of row i (the columns right of j are masked, and cropped from the weight), is
    a slice of a cache padded on the left, read in place: no gather.
    """

    def __init__(self, conv: nn.Conv2d, n: int, height: int, width: int):
        _, self.left, _ = geometry(conv)
        weight = masked_weight(conv)[:, :, 0, : self.left + 1]  # (out, in, left+1)
        self.weight_t = weight.permute(2, 1, 0).reshape(-1, len(weight))  # ((left+1)·in, out), window layout
        self.bias, self.width = conv.bias, width
        self.cache = weight.new_zeros(n, height, self.left + width, conv.in_channels)

    def slot(self, t: int) -> Tensor:
        i, j = divmod(t, self.width)
        return self.cache[:, i, self.left + j]  # (n, in)

    def write_channel(self, value: Tensor, k: int, t: int) -> None:
        """Input channel k at the pixel of step t, (n, 1)."""
        self.slot(t)[:, k] = value[:, 0]

    def at(self, t: int) -> Tensor:
        i, j = divmod(t, self.width)
        window = self.cache[:, i, j : j + self.left + 1]  # (n, left+1, in), contiguous per sample
        return affine(window.reshape(len(window), -1), self.weight_t, self.bias)

    def __call__(self, value: Tensor, t: int) -> Tensor:
        self.slot(t).copy_(value)
        return self.at(t)


def relu(value: Tensor, t: int) -> Tensor:
    return F.relu(value)


def compile_layers(layers: nn.Sequential, n: int, plan: Wavefront) -> list:
    """The per-step versions of a Sequential of ReLUs, dropouts and (masked) convolutions."""
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
            steps.append(Window(layer, n, plan, relu_input=after_relu))
        else:
            raise TypeError(f"no cached version of {type(layer).__name__}")
    return steps


def run(steps: list, value: Tensor, t: int) -> Tensor:
    for step in steps:
        value = step(value, t)
    return value


class Residual:
    """x + f(x) at a step's pixels, for a residual block's layers f.

    Where f ends with a window, a ReLU and a 1×1 convolution (both PixelCNN blocks do), the 1×1 product is
    accumulated into x in place, ``x += ReLU(h) W`` (one kernel, against a product and an add). Its bias rides
    along as one more input row of W, read from one more output column of the window whose weights are zero and
    whose bias is 1, so that ReLU(h) carries a constant 1 there.
    """

    def __init__(self, steps: list):
        self.steps = steps
        self.fused = (
            len(steps) >= 3 and isinstance(steps[-1], Pointwise) and steps[-1].bias is not None
            and steps[-2] is relu and isinstance(steps[-3], Window) and steps[-3].bias is not None
        )
        if self.fused:
            window, last = steps[-3], steps[-1]
            window.weight_t = F.pad(window.weight_t, (0, 1))  # a zero column
            window.bias = torch.cat([window.bias, window.bias.new_ones(1)])
            self.weight_t = torch.cat([last.weight_t, last.bias[None]])  # (out + 1, channels)

    def __call__(self, x: Tensor, t: int) -> Tensor:
        if not self.fused:
            return x + run(self.steps, x, t)
        return x.addmm_(run(self.steps[:-1], x, t), self.weight_t)


def input_values(scale, levels: int, device) -> Tensor:
    """The network's input for each value, a table the samplers index with each draw (one kernel instead of
    scaling it), and one entry more for ``levels``, the out-of-range value of non-finite logits (``Draws``)."""
    return scale(torch.arange(levels + 1, device=device))


def windows_of(module: nn.Module) -> list[nn.Conv2d]:
    """The masked convolutions wider than 1×1 that a cached loop evaluates as windows."""
    return [m for m in module.modules() if isinstance(m, MaskedConv2d) and m.kernel_size != (1, 1)]


def pixelcnn_plan(net, shape, device) -> Wavefront:
    """A PixelCNN's wavefront: slope one more than its widest window's reach to the right. The first layer is a
    window whatever its size: it reads the image cache."""
    convs = [net.input, *windows_of(net.blocks)]
    slope = 1 + max(geometry(conv)[1] for conv in convs)
    return Wavefront(shape[1], shape[2], slope, [geometry(conv) for conv in convs], device)


def generate_pixelcnn(net, n: int, y: Tensor | None, new_draws, scale, shape, plan: Wavefront | None = None) -> Tensor:
    """(n, C, H, W) integer samples of a ``PixelCNNNet`` (no labels), a wavefront step at a time."""
    c, h, w = shape
    device = net.input.weight.device
    plan = plan or pixelcnn_plan(net, shape, device)
    draws = new_draws(n, shape, device)
    u = draws.u.index_select(2, plan.order)  # (n, C, H·W): the uniforms in slot order
    scaled = input_values(scale, net.levels, device)
    first = Window(net.input, n, plan)
    blocks = [Residual(compile_layers(block.net, n, plan)) for block in net.blocks]
    head = compile_layers(net.head, n, plan)
    x = torch.zeros(n, c, h * w, dtype=torch.long, device=device)  # slot order
    for t, (positions, slots) in enumerate(zip(plan.positions, plan.slots)):
        shifted = slice(slots.start - 1, slots.stop - 1)  # no padding slot here
        for k in range(c):
            # The image cache holds the step's channels < k (mask A shows no others).
            s = first.at(t)  # (n·P, channels)
            for block in blocks:
                s = block(s, t)
            logits = run(head, s, t).view(n, len(positions), c, net.levels)[:, :, k]  # (n, P, levels)
            x[:, k, shifted] = values = draws(logits, k, positions, u[:, k, shifted])  # (n, P)
            first.write_channel(scaled[values], k, t)
        # Now every layer's value at the step's pixels is final: no channel group reads its own data channel there.
    return x.index_select(2, plan.to_raster).view(n, c, h, w)


generate_pixelcnn.plan = pixelcnn_plan


def gate(value: Tensor) -> Tensor:
    f, g = value.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer:
    """One ``GatedBlock`` for sampling: its vertical stack a row at a time, its horizontal stack per pixel."""

    def __init__(self, block, n: int, plan: Wavefront, y: Tensor | None):
        self.block, self.first = block, block.first
        v = block.v_conv
        # The vertical input, NCHW, padded so that row i's kernel rows (strictly above i for the first layer,
        # up to i otherwise) are always padded rows i … i+pad.
        self.v_top = v.pad + 1 if v.strict else v.pad
        self.v_cache = v.conv.weight.new_zeros(
            n, v.conv.in_channels, plan.height + self.v_top, plan.width + 2 * v.pad
        )
        self.h_conv = RowWindow(block.h_conv, n, plan.height, plan.width)
        self.h_out, self.skip_t = Pointwise(block.h_out), Pointwise(block.skip).weight_t
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

    def horizontal(self, h_in: Tensor | None, j: int, t: int) -> tuple[Tensor, Tensor]:
        """The horizontal stack at column j, step t (raster order): its new value and its gated units, each (n, h);
        the gated units feed this layer's skip connection.

        The first layer reads the image, which the sampler writes into its cache after each draw (``h_in``
        None)."""
        h_pre = (self.h_conv.at(t) if self.first else self.h_conv(h_in, t)) + self.v_to_h_row[:, j]
        if self.bias_h is not None:
            h_pre = h_pre + self.bias_h
        gated = gate(h_pre)
        h_out = self.h_out(gated, t)
        return (h_out if self.first else h_in + h_out), gated


def gated_plan(net, shape, device) -> Wavefront:
    """Raster order: the vertical stack computes row i whole, so row i-1 must be finished first."""
    return Wavefront(shape[1], shape[2], shape[2], [], device)  # its windows are rows: ``RowWindow``


def generate_gated_pixelcnn(
    net, n: int, y: Tensor | None, new_draws, scale, shape, plan: Wavefront | None = None
) -> Tensor:
    """(n, C, H, W) integer samples of a ``GatedPixelCNNNet``."""
    c, h, w = shape
    device = net.head[1].weight.device
    plan = plan or gated_plan(net, shape, device)
    draws = new_draws(n, shape, device)
    scaled = input_values(scale, net.levels, device)
    layers = [GatedLayer(block, n, plan, y) for block in net.layers]
    skip_bias = torch.stack([block.skip.bias for block in net.layers]).sum(0)
    head = compile_layers(net.head, n, plan)
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
            t = i * w + j
            positions = plan.positions[t]  # (1,): this pixel
            for k in range(c):
                hor, skip = None, None
                for layer in layers:  # the skip connections summed in place, all their biases at once
                    hor, gated = layer.horizontal(hor, j, t)
                    skip = affine(gated, layer.skip_t, skip_bias) if skip is None else skip.addmm_(gated, layer.skip_t)
                logits = run(head, skip, t).view(n, 1, c, net.levels)[:, :, k]  # (n, 1, levels)
                values = draws(logits, k, positions, draws.u[:, k, t : t + 1])  # (n, 1)
                x[:, k, i, j] = values[:, 0]
                layers[0].h_conv.write_channel(scaled[values], k, t)  # for channel k+1 and the pixels to the right
    return x


generate_gated_pixelcnn.plan = gated_plan
