"""Cached sampling for PixelCNN++ (in the spirit of Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models", whose experiments are on this very network).

The naive sampler runs the whole network once per pixel. But drawing pixel p changes only the activations that
depend on it, and each activation, once every pixel it depends on is drawn, never changes again. So the network's
body is recorded once as a program (``genzoo.nn.pixelcnn_pp.Planner``) in which every position q of every feature
map knows ``last(q)``, the last pixel in raster order that it depends on:

    last(image at pixel p) = p,    last(out at q) = max_{inputs (m, q') in the window of q} last(m at q'),

(−1 where nothing does: the rows the shifts bring in, the padding). Position q is computed exactly once, at step
last(q) + 1, i.e. as soon as that pixel is drawn, from the caches of the maps it reads: a window of slots for the
shifted convolutions (with the input of a stride-2 transposed convolution placed at the even positions of the
finer grid, its kernel flipped), the same slot for pointwise layers. Step t computes, layer by layer in program
order, the positions whose last pixel is t − 1, reads the mixture's parameters at pixel t (final by causality:
they depend only on pixels < t) and draws its channels through ``Draws``; so over a whole sample every activation
is computed once, about one full pass of the network instead of H·W of them, at every resolution, with no special
case for the down- and up-sampling layers.

Each sub-pixel comes from its own uniform and the same conditional CDF as in the naive sampler, so the samples are
the naive sampler's, up to float rounding in the rare draw that falls within ~1e-6 of a level's edge.

Left out, relative to the paper: its fixed-size queues per layer (every map keeps its whole cache here: simpler,
and at these sizes small), and any CUDA-graph recording (the loop runs eagerly on every device).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genzoo.nn.fast_pixelcnn import sampling_mode
from genzoo.nn.pixelcnn_pp import Instruction, Map, Planner, ShiftedConv, concat_elu

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> {(shape, device): Plan}


@dataclass
class Step:
    """One instruction's work at one step: its output positions' slots and, for a window, its input slots."""

    instruction: int
    slots: Tensor  # (P,) output slots, 1 + position
    window: Tensor | None  # (P·taps,) input slots


class Plan:
    """The program of a network at one image size, and per step the positions each instruction computes."""

    def __init__(self, net: nn.Module, shape: tuple[int, int, int], device: torch.device):
        c, h, w = shape
        self.height, self.width = h, w
        self.padded = net.padded_size(h, w)
        hp, wp = self.padded
        r, col = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
        last = torch.where((r < h) & (col < w), r * w + col, torch.full_like(r, -1)).flatten()
        self.image = Map(0, (hp, wp), c + 1, last)
        planner = Planner(self.image)
        self.output = net.body(planner, self.image, None if net.num_classes == 0 else "y")
        self.maps, self.program = planner.maps, planner.program
        # A concat_elu map that only feeds 1×1 convolutions is never stored: the convolution applies it to what it
        # reads. One that a window reads is: applying it in the window would repeat it for every tap.
        self.elu_of = {ins.out.id: ins.inputs[0] for ins in self.program if ins.fn is concat_elu}
        readers = {}
        for ins in self.program:
            for m in ins.inputs:
                readers.setdefault(m.id, []).append(ins)
        self.skipped = {
            i for i in self.elu_of if all(reader.kind == "pointwise_conv" for reader in readers.get(i, []))
        }
        self.steps: list[list[Step]] = [[] for _ in range(h * w)]
        for index, ins in enumerate(self.program):
            if ins.out.id in self.skipped:
                continue
            step = (ins.out.last + 1).clamp(min=0)  # (positions,)
            keep = step < h * w  # a value that needs the last pixel is needed by nothing
            positions = torch.nonzero(keep).squeeze(1)
            order = torch.argsort(step[positions], stable=True)
            positions, when = positions[order], step[positions][order]
            bounds = torch.searchsorted(when, torch.arange(h * w + 1))
            for t in torch.nonzero(bounds[1:] > bounds[:-1]).squeeze(1).tolist():
                at = positions[bounds[t] : bounds[t + 1]]
                window = ins.window[at].flatten().to(device) if ins.window is not None else None
                self.steps[t].append(Step(index, (at + 1).to(device), window))

    @classmethod
    def of(cls, net: nn.Module, shape: tuple[int, int, int], device: torch.device) -> Plan:
        """The plan for this size, its index tensors on ``device`` (planned on the CPU, then moved once)."""
        plans = _PLANS.setdefault(net, {})
        key = (shape, torch.device(device))
        if key not in plans:
            plans[key] = cls(net, shape, device)
        return plans[key]


class Runner:
    """The caches of one batch, and each instruction as a function of the values at a step's positions."""

    def __init__(self, net: nn.Module, plan: Plan, n: int, y: Tensor | None, device):
        self.plan, self.n = plan, n
        hp, wp = plan.padded
        slots = 1 + hp * wp
        self.caches = {
            m.id: torch.zeros(n, slots, m.channels, device=device)
            for m in plan.maps if m.id not in plan.skipped
        }
        ones = torch.zeros(hp, wp, device=device)
        ones[: plan.height, : plan.width] = 1
        self.caches[0][:, 1:, -1] = ones.flatten()  # the image's channel of ones, 0 on the padding
        self.ops = [self.compile(ins, y) for ins in plan.program]

    def source(self, m: Map) -> tuple[Tensor, bool]:
        """The cache an instruction reads for map m, and whether to apply concat_elu to what it reads."""
        if m.id in self.plan.skipped:
            return self.caches[self.plan.elu_of[m.id].id], True
        return self.caches[m.id], False

    def compile(self, ins: Instruction, y: Tensor | None):
        n = self.n
        if ins.kind == "window":
            module: ShiftedConv = ins.module
            weight = module.window_weight()  # (out, in, kh, kw)
            weight_t = weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])  # (taps·in, out)
            bias = module.conv.bias
            cache = self.caches[ins.inputs[0].id]

            def window(step: Step) -> Tensor:
                values = cache.index_select(1, step.window)  # (n, P·taps, C)
                return torch.addmm(bias, values.view(n * len(step.slots), -1), weight_t)

            return window
        if ins.kind == "pointwise_conv":
            weight_t = ins.module.weight.flatten(1).t()  # (in, out)
            bias = ins.module.bias
            cache, elu = self.source(ins.inputs[0])

            def pointwise_conv(step: Step) -> Tensor:
                values = cache.index_select(1, step.slots).view(-1, cache.shape[-1])
                return torch.addmm(bias, concat_elu(values) if elu else values, weight_t)

            return pointwise_conv
        if ins.kind == "class_bias":
            bias = ins.module(y)  # (n, C)
            (cache,) = [self.caches[m.id] for m in ins.inputs]

            def class_bias(step: Step) -> Tensor:
                values = cache.index_select(1, step.slots)  # (n, P, C)
                return (values + bias[:, None]).view(-1, values.shape[-1])

            return class_bias
        caches = [self.caches[m.id] for m in ins.inputs]
        fn = ins.fn

        def pointwise(step: Step) -> Tensor:
            return fn(*(c.index_select(1, step.slots).view(-1, c.shape[-1]) for c in caches))

        return pointwise

    def step(self, t: int) -> None:
        for work in self.plan.steps[t]:
            ins = self.plan.program[work.instruction]
            value = self.ops[work.instruction](work)  # (n·P, C)
            out = self.caches[ins.out.id]
            out.index_copy_(1, work.slots, value.view(self.n, len(work.slots), -1))


def generate_pixelcnn_pp(net, n: int, y: Tensor | None, new_draws, scale, shape) -> Tensor:
    """(n, C, H, W) integer samples of a ``PixelCNNPPNet``, a pixel at a time over per-layer caches."""
    c, h, w = shape
    device = net.head.weight.device
    with sampling_mode(device):
        plan = Plan.of(net, tuple(shape), device)
        runner = Runner(net, plan, n, y if net.num_classes > 0 else None, device)
        draws = new_draws(n, shape, device)
        distribution = net.distribution
        image, params_cache = runner.caches[0], runner.caches[plan.output.id]
        wp = plan.padded[1]
        positions = torch.arange(h * w, device=device)
        x = torch.zeros(n, c, h, w, dtype=torch.long, device=device)
        for t in range(h * w):
            runner.step(t)
            i, j = divmod(t, w)
            slot = 1 + i * wp + j
            params = params_cache[:, slot]  # (n, P): final, as they depend on pixels < t only
            for k in range(c):
                cdf = distribution.cdf(params[:, None], k, x[:, None, :k, i, j])  # (n, 1, levels)
                x[:, k, i, j] = values = draws.invert(cdf, k, positions[t : t + 1])[:, 0]
                image[:, slot, k] = scale(values)
    return x.clone()
