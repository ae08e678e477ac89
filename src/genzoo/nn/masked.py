"""Masked convolutions: the building block of PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural
Networks", section 3.4).

An image is generated in raster order, and within a pixel in channel order R → G → B. A masked kernel lets the
output at (i, j) see the rows above and the pixels to its left; at the centre it sees the *channel groups* before
its own (mask A, used once on the image itself) or up to and including its own (mask B, every later layer).

Feature maps are split into one group per data channel: with C data channels, feature channel k of n belongs to
group ``k·C // n``. So a stack of mask-A-then-B layers keeps "group g at (i, j) depends only on the past and on
data channels < g at (i, j)", and the last layer's ``C·levels`` channels read as C contiguous groups of logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError


def channel_groups(n_channels: int, data_channels: int, repeat: int = 1) -> Tensor:
    """Group (data channel) of each of ``repeat`` contiguous blocks of ``n_channels`` feature channels."""
    return torch.arange(n_channels).mul(data_channels).div(n_channels, rounding_mode="floor").repeat(repeat)


def raster_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: tuple[int, int],
    mask_type: str,
    data_channels: int = 1,
    out_repeat: int = 1,
    in_repeat: int = 1,
) -> Tensor:
    """(out, in, kh, kw) 0/1 mask: rows above the centre, pixels left of it, and the allowed centre groups."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels * out_repeat, in_channels * in_repeat, kh, kw)
    mask[:, :, :ch, :] = 1
    mask[:, :, ch, :cw] = 1
    g_out = channel_groups(out_channels, data_channels, out_repeat)[:, None]
    g_in = channel_groups(in_channels, data_channels, in_repeat)[None, :]
    mask[:, :, ch, cw] = (g_in < g_out).float() if mask_type == "A" else (g_in <= g_out).float()
    return mask


def require_odd_kernels(**sizes: int) -> None:
    """A masked kernel is centred on the sub-pixel it predicts, so its sizes must be odd. ``sizes`` are a network's
    keyword arguments, named as the config sets them (under ``model.net``), so the user reads which one to fix."""
    for key, size in sizes.items():
        if size < 1 or size % 2 == 0:
            near = f"{size - 1} or {size + 1}" if size > 1 else "1 or 3"
            raise GenzooError(f"model.net.{key}={size} has no centre pixel to mask around: use an odd size, "
                              f"e.g. {near}.")


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by a raster mask (type A or B) on every call.

    ``out_repeat`` / ``in_repeat`` > 1 describe channels laid out as several blocks with the same grouping (the
    two halves of a gated unit), so ``out_channels`` must then be divisible by it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str = "B",
        data_channels: int = 1,
        out_repeat: int = 1,
        in_repeat: int = 1,
        bias: bool = True,
    ):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"a masked kernel needs odd sizes to have a centre, not {kh}×{kw}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        mask = raster_mask(
            out_channels // out_repeat, in_channels // in_repeat, (kh, kw), mask_type, data_channels,
            out_repeat, in_repeat,
        )
        self.mask_type = mask_type
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, masked_weight(self), self.bias, self.stride, self.padding)


def masked_weight(conv: nn.Conv2d) -> Tensor:
    """The kernel a convolution applies: masked for a ``MaskedConv2d``, as is for a plain one (the samplers that
    evaluate a layer at one pixel at a time read it)."""
    return conv.weight * conv.mask if isinstance(conv, MaskedConv2d) else conv.weight
