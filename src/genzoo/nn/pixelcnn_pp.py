"""The PixelCNN++ network (Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with
Discretized Logistic Mixture Likelihood and Other Modifications"), written once and read three ways.

Two streams replace masked kernels. The *up* stream u at (i, j) sees every row above i; the *up-left* stream ul
sees those rows and the pixels left of (i, j) in row i. Both are built from shifted convolutions, whose window is
placed so that it never covers the present or the future (section 2.3 and the paper's code):

    down-shifted k_h×k_w:        rows i-k_h+1 … i,    columns j-(k_w-1)/2 … j+(k_w-1)/2   (2×3 kernels)
    down-right-shifted k_h×k_w:  rows i-k_h+1 … i,    columns j-k_w+1 … j                 (2×2 kernels)

and the image enters shifted one row down (u) or one row down plus one column right (ul), so no activation at
(i, j) depends on pixel (i, j) itself. A pixel's parameters depend only on earlier *pixels*: its channels are
linked by the output distribution (``genzoo.nn.distributions.DiscretizedLogisticMixture``), which is what
"conditioning on whole pixels" means (section 2.2).

Every layer is a gated ResNet block with concatenated ELUs (section 2.4; concat_elu(x) = ELU([x, −x])):

    c = conv(concat_elu(x)) [+ nin(concat_elu(a))];   c = conv(dropout(concat_elu(c))) [+ W_y y];
    x ← x + c_1 ⊙ σ(c_2)        (c split in two along the channels)

with ``a`` a short-cut input (u for ul; the up pass's output at the same resolution in the down pass) and ``y`` a
learned embedding of the class label when conditional. The network has three resolutions, H, H/2 and H/4: an up
pass of ``resnets`` blocks per resolution with a stride-2 shifted convolution between them, then a down pass of
``resnets`` + 1 blocks per resolution (``resnets`` at H/4) fed by the up pass's outputs in reverse order (the
short-cuts of section 2.5, "like a U-net"), with stride-2 shifted transposed convolutions up; the head reads
ELU(ul) through a 1×1 convolution to the mixture's parameters.

Sizes not divisible by 4: the input is padded with zeros at the bottom and right to the next multiple of 4
(the extra constant input channel of ones, as in the paper's code, is 0 there, so the network can tell), and the
output is cropped back. The padded positions lie after every real pixel that could read them, so the likelihood
is still exact and normalised; they only cost compute.

The body is written once, in ``body``, against an *executor*: ``Full`` runs it on whole tensors (training, the
naive sampler), ``Planner`` records it as a list of instructions with, for every position of every map, the last
pixel it depends on, which the cached sampler (``genzoo.nn.fast_pixelcnn_pp``) replays a pixel at a time.

Left out, relative to the paper: weight normalisation and its data-dependent initialisation (plain convolutions
with PyTorch's default initialisation, trained with AdamW here), Polyak averaging of the weights, and the paper's
width and depth for CIFAR-10 (160 filters, 5 blocks per resolution), which are config values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.distributions import DiscretizedLogisticMixture


def elu(x: Tensor) -> Tensor:
    """ELU(x) = x for x > 0, e^x − 1 below, written as ReLU(x) + e^{min(x, 0)} − 1: the same values (within 3e-7)
    and gradients as ``F.elu``, which on CPU runs a scalar loop 15× slower than ``exp`` (torch 2.14, 2 cores)."""
    return F.relu(x) + torch.exp(-F.relu(-x)) - 1


def concat_elu(x: Tensor) -> Tensor:
    """ELU([x, −x]) along the channels: both signs pass, doubling them."""
    return elu(torch.cat([x, -x], dim=1))


class ShiftedConv(nn.Module):
    """A convolution whose output at (i, j) reads input rows i·s + row0 … and columns j·s + col0 … (zero outside),
    s the stride, or a stride-2 transposed convolution with the window that places it the same way.

    ``kind``: "down" (a k_h×k_w window of rows ending at the output's row, centred on its column), "down_right"
    (rows and columns both ending at the output's), ``shift``: (rows, columns) the window moves further up and
    left, the paper's down_shift and right_shift of the result.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], kind: str,
                 stride: int = 1, transposed: bool = False, shift: tuple[int, int] = (0, 0)):
        super().__init__()
        self.kernel, self.kind, self.stride, self.transposed = tuple(kernel), kind, stride, transposed
        kh, kw = self.kernel
        if transposed:  # weight (in, out, kh, kw): output (2i + a, 2j + b) gets input (i, j) through tap (a, b)
            self.conv = nn.ConvTranspose2d(in_channels, out_channels, self.kernel, stride=stride)
            # the crop of the paper's code: rows from 0, columns from (kw-1)//2 for "down", from 0 for "down_right"
            self.crop_col = (kw - 1) // 2 if kind == "down" else 0
            self.row0, self.col0 = -(kh - 1), self.crop_col - (kw - 1)  # of the equivalent window conv, input at 2×
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, self.kernel, stride=stride)
            self.row0 = -(kh - 1) - shift[0]
            self.col0 = (-((kw - 1) // 2) if kind == "down" else -(kw - 1)) - shift[1]

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel
        h, w = x.shape[-2:]
        if self.transposed:
            out = self.conv(x)  # (…, 2h + kh - 2, 2w + kw - 2)
            return out[..., : self.stride * h, self.crop_col : self.crop_col + self.stride * w]
        s = self.stride
        h_out, w_out = -(-h // s), -(-w // s)
        top, left = -self.row0, -self.col0
        bottom = max(0, (h_out - 1) * s + self.row0 + kh - h)
        right = max(0, (w_out - 1) * s + self.col0 + kw - w)
        out = self.conv(F.pad(x, (left, right, top, bottom)))
        return out[..., :h_out, :w_out]

    def window_weight(self) -> Tensor:
        """(out, in, kh, kw): the kernel as an ordinary window convolution, tap (a, b) reading input row
        i·s + row0 + a and column j·s + col0 + b (for the transposed one: of the input placed at even positions of
        the output grid, the kernel flipped)."""
        if self.transposed:
            return self.conv.weight.flip(2, 3).transpose(0, 1)
        return self.conv.weight

    def window(self, out_size: tuple[int, int], in_size: tuple[int, int]) -> Tensor:
        """(H_out·W_out, kh·kw) input slots each output position reads (slot 0: zero; slot 1 + r·W_in + c), in
        ``window_weight``'s tap order."""
        kh, kw = self.kernel
        (h_out, w_out), (h_in, w_in) = out_size, in_size
        r = torch.arange(h_out).view(-1, 1, 1, 1)
        c = torch.arange(w_out).view(1, -1, 1, 1)
        a = torch.arange(kh).view(1, 1, -1, 1)
        b = torch.arange(kw).view(1, 1, 1, -1)
        if self.transposed:  # the input sits at the even positions of a grid of the output's size
            rows, cols = r + self.row0 + a, c + self.col0 + b
            ok = (rows % 2 == 0) & (cols % 2 == 0)
            rows, cols = rows.div(2, rounding_mode="floor"), cols.div(2, rounding_mode="floor")
        else:
            rows, cols = r * self.stride + self.row0 + a, c * self.stride + self.col0 + b
            ok = torch.ones_like(rows, dtype=torch.bool)
        ok = ok & (rows >= 0) & (rows < h_in) & (cols >= 0) & (cols < w_in)
        slots = torch.where(ok, 1 + rows * w_in + cols, torch.zeros_like(rows))
        return slots.reshape(h_out * w_out, kh * kw)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        if self.transposed:
            return self.stride * h, self.stride * w
        return -(-h // self.stride), -(-w // self.stride)


class GatedResnet(nn.Module):
    """x + c₁ ⊙ σ(c₂) (see the module docstring); ``shortcut``: channels of the short-cut input a (0: none)."""

    def __init__(self, channels: int, kind: str, shortcut: int, num_classes: int, dropout: float):
        super().__init__()
        kernel = (2, 3) if kind == "down" else (2, 2)
        self.conv_in = ShiftedConv(2 * channels, channels, kernel, kind)
        self.nin_a = nn.Conv2d(2 * shortcut, channels, 1) if shortcut else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = ShiftedConv(2 * channels, 2 * channels, kernel, kind)
        self.embed = nn.Embedding(num_classes, 2 * channels) if num_classes > 0 else None

    def forward(self, ex, x, a=None, y=None):
        c = ex.conv(self.conv_in, ex.apply(concat_elu, x))
        if a is not None:
            c = ex.apply(torch.add, c, ex.conv(self.nin_a, ex.apply(concat_elu, a)))
        c = ex.conv(self.conv_out, ex.apply(self.dropout, ex.apply(concat_elu, c)))
        if self.embed is not None and y is not None:
            c = ex.class_bias(self.embed, c)
        return ex.apply(gated_residual, x, c)


def gated_residual(x: Tensor, c: Tensor) -> Tensor:
    c1, c2 = c.chunk(2, dim=1)
    return x + c1 * torch.sigmoid(c2)


class PixelCNNPPNet(nn.Module):
    whole_pixels = True  # a pixel's parameters see earlier pixels only: its channels are linked by the mixture

    def __init__(self, data_channels: int, levels: int, components: int = 10, channels: int = 80, resnets: int = 5,
                 dropout: float = 0.5, num_classes: int = 0):
        super().__init__()
        self.data_channels, self.levels, self.num_classes = data_channels, levels, num_classes
        self.distribution = DiscretizedLogisticMixture(data_channels, levels, components)
        f, n = channels, resnets
        self.u_in = ShiftedConv(data_channels + 1, f, (2, 3), "down", shift=(1, 0))
        self.ul_in_up = ShiftedConv(data_channels + 1, f, (1, 3), "down", shift=(1, 0))
        self.ul_in_left = ShiftedConv(data_channels + 1, f, (2, 1), "down_right", shift=(0, 1))

        def blocks(count, u_short, ul_short):
            return nn.ModuleList([
                nn.ModuleList([GatedResnet(f, "down", u_short, num_classes, dropout),
                               GatedResnet(f, "down_right", ul_short, num_classes, dropout)])
                for _ in range(count)
            ])

        self.up = nn.ModuleList([blocks(n, 0, f) for _ in range(3)])
        self.down = nn.ModuleList([blocks(n if r == 0 else n + 1, f, 2 * f) for r in range(3)])
        self.downsample = nn.ModuleList([
            nn.ModuleList([ShiftedConv(f, f, (2, 3), "down", stride=2), ShiftedConv(f, f, (2, 2), "down_right", stride=2)])
            for _ in range(2)
        ])
        self.upsample = nn.ModuleList([
            nn.ModuleList([ShiftedConv(f, f, (2, 3), "down", stride=2, transposed=True),
                           ShiftedConv(f, f, (2, 2), "down_right", stride=2, transposed=True)])
            for _ in range(2)
        ])
        self.head = nn.Conv2d(f, self.distribution.params, 1)

    def body(self, ex, image, y=None):
        """The network on the padded image with its channel of ones, against an executor (``Full``, ``Planner``)."""
        y = y if self.num_classes > 0 else None
        u = ex.conv(self.u_in, image)
        ul = ex.apply(torch.add, ex.conv(self.ul_in_up, image), ex.conv(self.ul_in_left, image))
        us, uls = [u], [ul]
        for r, stage in enumerate(self.up):
            for u_block, ul_block in stage:
                u = u_block(ex, u, y=y)
                ul = ul_block(ex, ul, a=u, y=y)
                us.append(u), uls.append(ul)
            if r < 2:
                u, ul = ex.conv(self.downsample[r][0], u), ex.conv(self.downsample[r][1], ul)
                us.append(u), uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for r, stage in enumerate(self.down):
            for u_block, ul_block in stage:
                u = u_block(ex, u, a=us.pop(), y=y)
                ul = ul_block(ex, ul, a=ex.apply(cat_channels, u, uls.pop()), y=y)
            if r < 2:
                u, ul = ex.conv(self.upsample[r][0], u), ex.conv(self.upsample[r][1], ul)
        return ex.conv(self.head, ex.apply(elu, ul))

    @staticmethod
    def padded_size(h: int, w: int) -> tuple[int, int]:
        return 4 * math.ceil(h / 4), 4 * math.ceil(w / 4)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, P, H, W) mixture parameters of scaled images (B, C, H, W); a pixel's see earlier pixels only."""
        b, c, h, w = x.shape
        hp, wp = self.padded_size(h, w)
        image = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        image = F.pad(image, (0, wp - w, 0, hp - h))
        return self.body(Full(y), image, y)[..., :h, :w]

    def generate(self, n: int, y, new_draws, scale, shape) -> Tensor:
        """(n, C, H, W) samples drawn with per-layer caches (``genzoo.nn.fast_pixelcnn_pp``), evaluation mode."""
        from genzoo.nn.fast_pixelcnn_pp import generate_pixelcnn_pp

        return generate_pixelcnn_pp(self, n, y, new_draws, scale, shape)


def cat_channels(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat([a, b], dim=1)


class Full:
    """Runs ``body`` on whole (B, C, H, W) tensors."""

    def __init__(self, y: Tensor | None):
        self.y = y

    def conv(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x)

    def apply(self, fn: Callable, *maps: Tensor) -> Tensor:
        return fn(*maps)

    def class_bias(self, embed: nn.Embedding, x: Tensor) -> Tensor:
        return x + embed(self.y)[:, :, None, None]


@dataclass
class Map:
    """A feature map as the planner sees it: its id, size, channels, and for every position (raster order) the
    last pixel of the image it depends on (−1: none)."""

    id: int
    size: tuple[int, int]
    channels: int
    last: Tensor  # (H·W,) int64


@dataclass
class Instruction:
    """``out = op(inputs)`` at some positions. ``window``: (P_out, taps) input slots of a spatial op (None for a
    pointwise one); ``module`` the layer, ``fn`` the pointwise function."""

    out: Map
    inputs: list[Map]
    module: nn.Module | None = None
    fn: Callable | None = None
    window: Tensor | None = None
    kind: str = field(default="pointwise")


class Planner:
    """Runs ``body`` on ``Map``s: records each operation, and where each value's dependencies end."""

    def __init__(self, image: Map):
        self.maps = [image]
        self.program: list[Instruction] = []

    def new_map(self, size, channels, last) -> Map:
        m = Map(len(self.maps), tuple(size), channels, last)
        self.maps.append(m)
        return m

    def conv(self, module: nn.Module, x: Map) -> Map:
        if isinstance(module, ShiftedConv):
            size = module.out_size(*x.size)
            window = module.window(size, x.size)  # (P_out, taps)
            padded = torch.cat([torch.tensor([-1]), x.last])
            last = padded[window].max(1).values
            out = self.new_map(size, module.conv.out_channels, last)
            self.program.append(Instruction(out, [x], module=module, window=window, kind="window"))
            return out
        out = self.new_map(x.size, module.out_channels, x.last.clone())  # a 1×1 convolution
        self.program.append(Instruction(out, [x], module=module, kind="pointwise_conv"))
        return out

    def apply(self, fn: Callable, *maps: Map) -> Map:
        if isinstance(fn, nn.Dropout):
            return maps[0]  # evaluation mode: the identity
        last = torch.stack([m.last for m in maps]).max(0).values
        channels = {concat_elu: 2 * maps[0].channels, gated_residual: maps[0].channels,
                    cat_channels: sum(m.channels for m in maps)}.get(fn, maps[0].channels)
        out = self.new_map(maps[0].size, channels, last)
        self.program.append(Instruction(out, list(maps), fn=fn))
        return out

    def class_bias(self, embed: nn.Embedding, x: Map) -> Map:
        out = self.new_map(x.size, x.channels, x.last.clone())
        self.program.append(Instruction(out, [x], module=embed, kind="class_bias"))
        return out
