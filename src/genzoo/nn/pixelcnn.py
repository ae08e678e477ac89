"""PixelCNN and Gated PixelCNN networks: integer-free ``nn.Module``s from scaled images to logits.

* ``PixelCNNNet`` (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", fig. 5): a 7×7 mask-A
  convolution, residual blocks (ReLU, 1×1, ReLU, 3×3 mask B, ReLU, 1×1, plus the input), two 1×1 mask-B layers.
  Stacked masked 3×3 kernels never reach the region above and to the right of a pixel beyond the first layer's
  reach (the "blind spot"); the tests pin it.
* ``GatedPixelCNNNet`` (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"): a
  vertical stack that sees every row above (all columns) and a horizontal stack that sees the pixels to the left
  and the vertical stack, so no earlier pixel is missed; gated units

      y = tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h),

  with h a learned class embedding when conditional. Residual connections in the horizontal stack and skip
  connections to the output, as in the paper. The vertical stack is written with cropped kernels of
  ⌈k/2⌉ rows instead of a masked k×k kernel, so it does no wasted work.

Both map ``(B, C, H, W)`` floats to ``(B, C, levels, H, W)`` logits; channel groups follow ``genzoo.nn.masked``.
Both sample with per-layer caches through ``generate`` (``genzoo.nn.fast_pixelcnn``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.fast_pixelcnn import generate_gated_pixelcnn, generate_pixelcnn, sample_with_caches
from genzoo.nn.masked import MaskedConv2d, require_odd_kernels


class ResidualBlock(nn.Module):
    """PixelCNN's residual block, added to its input.

    ``bottleneck``: the paper's 2h → h (1×1) → h (k×k mask B) → 2h (1×1); else a full-width k×k mask-B
    convolution followed by a 1×1 (more parameters per layer, better on small images).
    """

    def __init__(
        self, channels: int, data_channels: int, kernel_size: int = 3, dropout: float = 0.0, bottleneck: bool = True
    ):
        super().__init__()
        if bottleneck:
            half = max(channels // 2, data_channels)
            layers = [
                nn.ReLU(), MaskedConv2d(channels, half, 1, "B", data_channels),
                nn.ReLU(), MaskedConv2d(half, half, kernel_size, "B", data_channels),
                nn.ReLU(), MaskedConv2d(half, channels, 1, "B", data_channels),
            ]
        else:
            layers = [
                nn.ReLU(), MaskedConv2d(channels, channels, kernel_size, "B", data_channels),
                nn.ReLU(), MaskedConv2d(channels, channels, 1, "B", data_channels),
            ]
        self.net = nn.Sequential(*layers, nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def output_head(channels: int, hidden: int, data_channels: int, levels: int) -> nn.Sequential:
    """ReLU, 1×1 mask B, ReLU, 1×1 mask B to C·levels logits (C contiguous groups of ``levels``)."""
    return nn.Sequential(
        nn.ReLU(),
        MaskedConv2d(channels, hidden, 1, "B", data_channels),
        nn.ReLU(),
        MaskedConv2d(hidden, data_channels * levels, 1, "B", data_channels),
    )


class PixelCNNNet(nn.Module):
    def __init__(
        self,
        data_channels: int,
        levels: int,
        channels: int = 96,
        blocks: int = 6,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 256,
        dropout: float = 0.0,
        bottleneck: bool = True,
    ):
        super().__init__()
        require_odd_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.data_channels, self.levels = data_channels, levels
        self.input = MaskedConv2d(data_channels, channels, first_kernel_size, "A", data_channels)
        self.blocks = nn.Sequential(
            *[ResidualBlock(channels, data_channels, kernel_size, dropout, bottleneck) for _ in range(blocks)]
        )
        self.head = output_head(channels, head_channels, data_channels, levels)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        out = self.head(self.blocks(self.input(x)))
        return out.view(b, c, self.levels, h, w)  # (B, C, levels, H, W)

    def generate(self, n: int, y, new_draws, scale, shape) -> Tensor:
        """(n, C, H, W) samples drawn with per-layer caches (``genzoo.nn.fast_pixelcnn``), evaluation mode."""
        return sample_with_caches(self, generate_pixelcnn, n, y, new_draws, scale, shape)


class VerticalConv(nn.Module):
    """k-wide convolution over the ⌈k/2⌉ rows up to row i (or strictly above it when ``strict``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, strict: bool):
        super().__init__()
        self.pad, self.strict = kernel_size // 2, strict
        self.conv = nn.Conv2d(in_channels, out_channels, (self.pad + 1, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        if self.strict:  # shift down one row: row i sees rows i-p-1 … i-1
            return self.conv(F.pad(x, (p, p, p + 1, 0))[:, :, :-1])
        return self.conv(F.pad(x, (p, p, p, 0)))


class GatedBlock(nn.Module):
    """One layer of both stacks. ``first``: reads the image (vertical strictly above, horizontal mask A)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        data_channels: int,
        kernel_size: int,
        first: bool,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        self.first, self.channels = first, channels
        self.v_conv = VerticalConv(in_channels, 2 * channels, kernel_size, strict=first)
        # The horizontal kernel is 1×k with the right half masked: row i, columns j-k//2 … j (centre by group).
        self.h_conv = MaskedConv2d(
            in_channels, 2 * channels, (1, kernel_size), "A" if first else "B", data_channels,
            out_repeat=2,
        )
        # The vertical stack holds no information from row i, so it may feed every horizontal group.
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", data_channels)
        self.skip = MaskedConv2d(channels, channels, 1, "B", data_channels)
        self.embed = nn.Embedding(num_classes, 4 * channels) if num_classes > 0 else None
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def gate(x: Tensor) -> Tensor:
        f, g = x.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        v_pre = self.v_conv(v)  # (B, 2h, H, W), rows < i only
        h_pre = self.h_conv(h) + self.v_to_h(v_pre)
        if self.embed is not None and y is not None:
            bias_v, bias_h = self.embed(y)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bias_v, h_pre + bias_h
        v_new = self.gate(v_pre)
        gated = self.dropout(self.gate(h_pre))
        h_new = self.h_out(gated) if self.first else h + self.h_out(gated)
        return v_new, h_new, self.skip(gated)


class GatedPixelCNNNet(nn.Module):
    def __init__(
        self,
        data_channels: int,
        levels: int,
        channels: int = 64,
        layers: int = 8,
        kernel_size: int = 5,
        first_kernel_size: int = 7,
        head_channels: int = 256,
        num_classes: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        require_odd_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.data_channels, self.levels = data_channels, levels
        self.layers = nn.ModuleList(
            [GatedBlock(data_channels, channels, data_channels, first_kernel_size, True, num_classes, dropout)]
            + [
                GatedBlock(channels, channels, data_channels, kernel_size, False, num_classes, dropout)
                for _ in range(layers - 1)
            ]
        )
        self.head = output_head(channels, head_channels, data_channels, levels)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        v, hor, skip = x, x, 0.0
        for layer in self.layers:
            v, hor, s = layer(v, hor, y)
            skip = skip + s
        return self.head(skip).view(b, c, self.levels, h, w)  # (B, C, levels, H, W)

    def generate(self, n: int, y, new_draws, scale, shape) -> Tensor:
        """(n, C, H, W) samples drawn with per-layer caches (``genzoo.nn.fast_pixelcnn``), evaluation mode."""
        return sample_with_caches(self, generate_gated_pixelcnn, n, y, new_draws, scale, shape)
