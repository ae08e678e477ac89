"""What the two PixelRNN networks share (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", sections 3.1–3.4 and table 1): the LSTM update, the skew of section 3.2, and the network around the
recurrent layers, with incremental sampling.

Both networks are (table 1, figure 5 right): a 7×7 mask-A convolution to 2h feature maps; residual LSTM layers,
each reading 2h maps, computing h hidden maps and adding them back through a 1×1 mask-B convolution to 2h; then
ReLU, 1×1 mask B, ReLU, 1×1 mask B to ``C·levels`` logits (``genzoo.nn.pixelcnn.output_head``). The LSTM core is
equation 3 of the paper,

    [o, f, i, g] = σ(K^ss ⊛ h_prev + K^is ⊛ x),    c = f ⊙ c_prev + i ⊙ g,    h = o ⊙ tanh(c),

with σ the logistic sigmoid for o, f, i and tanh for g. Colour (section 3.4): the 4h gate maps are four blocks of h
maps, each split into one channel group per colour as in ``genzoo.nn.masked``, and only the input-to-state and the
purely convolutional layers are masked. The state-to-state convolutions read only states of earlier pixels, so they
mix groups freely.

Sampling (``generate``): the recurrences are carried along, so each sub-pixel costs one pass of every layer at one
pixel instead of a pass of the whole network over the whole image. Each layer gives ``init_cache``, ``start_row``,
``step`` (one pixel) and ``end_row``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.masked import MaskedConv2d, masked_weight, require_odd_kernels
from genzoo.nn.pixelcnn import output_head


def lstm_update(gates: Tensor, c_prev: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Equation 3: gates ``(B, 4h, ...)`` as blocks [o, f, i, g] along ``dim``; the previous cell ``(B, h, ...)``."""
    o, f, i, g = gates.chunk(4, dim=dim)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def skew(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, C, H, H+W-1): row i moved right by i, so diagonal i+j becomes column i+j; zeros elsewhere.

    Padding each row with H zeros and re-reading the flat buffer with rows one element shorter shifts row i by i.
    """
    b, c, h, w = x.shape
    return F.pad(x, (0, h)).flatten(2)[:, :, : h * (w + h - 1)].view(b, c, h, w + h - 1)


def unskew(s: Tensor, width: int) -> Tensor:
    """Inverse of ``skew``: (B, C, H, H+W-1) → (B, C, H, W), reading row i from column i on."""
    b, c, h, d = s.shape
    return F.pad(s.flatten(2), (0, h)).view(b, c, h, d + 1)[:, :, :, :width]


def pointwise(conv: nn.Conv2d) -> tuple[Tensor, Tensor | None]:
    """A (masked) 1×1 convolution as a matrix and bias, to apply to the features of one pixel with ``F.linear``."""
    return masked_weight(conv)[:, :, 0, 0], conv.bias


class PixelRNNNet(nn.Module):
    """7×7 mask A → residual LSTM ``layers`` (each maps ``(B, 2h, H, W)`` to itself) → output head."""

    def __init__(
        self,
        data_channels: int,
        levels: int,
        hidden: int,
        layers: list[nn.Module],
        first_kernel_size: int = 7,
        head_channels: int = 32,
    ):
        super().__init__()
        require_odd_kernels(first_kernel_size=first_kernel_size)
        self.data_channels, self.levels, self.hidden = data_channels, levels, hidden
        self.input = MaskedConv2d(data_channels, 2 * hidden, first_kernel_size, "A", data_channels)
        self.layers = nn.ModuleList(layers)
        self.head = output_head(2 * hidden, head_channels, data_channels, levels)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        features = self.input(x)  # (B, 2h, H, W)
        for layer in self.layers:
            features = layer(features)
        return self.head(features).view(b, c, self.levels, h, w)  # (B, C, levels, H, W)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        y: Tensor | None,
        new_draws: Callable,
        scale: Callable[[Tensor], Tensor],
        shape: tuple[int, int, int],
    ) -> Tensor:
        """(n, C, H, W) samples, sub-pixel by sub-pixel in raster then channel order (``new_draws``: see
        ``genzoo.models.autoregressive.Draws``).

        Per sub-pixel: the 7×7 convolution at one pixel, one step of every layer, the head at one pixel. Within a
        pixel the C sub-pixels recompute that pixel's column of the network; no feature of the pixel depends on
        its last channel, so the states left after the last one are final.
        """
        c, height, width = shape
        device = self.input.weight.device
        kh, kw = self.input.kernel_size
        ph, pw = kh // 2, kw // 2
        x = torch.zeros(n, c, height, width, dtype=torch.long, device=device)
        draws, positions = new_draws(n, shape, device), torch.arange(height * width, device=device)
        # The network's input, zero-padded like the convolution; rows below the centre are masked, so never read.
        xs = F.pad(scale(x), (pw, pw, ph, ph))  # (n, C, H+2ph, W+2pw)
        w_input = masked_weight(self.input)[:, :, : ph + 1].flatten(1)  # (2h, C·(ph+1)·kw)
        head = [pointwise(m) if isinstance(m, nn.Conv2d) else m for m in self.head]
        w_last, b_last = head.pop()  # the C·levels logits: only sub-pixel k's rows are computed at step k
        levels = self.levels
        caches = [layer.init_cache(n, width) for layer in self.layers]
        for i in range(height):
            for layer, cache in zip(self.layers, caches):
                layer.start_row(cache)
            for j in range(width):
                for k in range(c):
                    patch = xs[:, :, i : i + ph + 1, j : j + kw]  # rows i-ph … i, columns j-pw … j+pw
                    features = F.linear(patch.flatten(1), w_input, self.input.bias)  # (n, 2h)
                    for layer, cache in zip(self.layers, caches):
                        features = layer.step(cache, j, features)
                    out = features
                    for m in head:
                        out = F.linear(out, *m) if isinstance(m, tuple) else m(out)
                    rows = slice(k * levels, (k + 1) * levels)
                    logits = F.linear(out, w_last[rows], b_last[rows])  # (n, levels)
                    x[:, k, i, j] = draws(logits[:, None], k, positions[i * width + j : i * width + j + 1])[:, 0]
                    xs[:, k, i + ph, j + pw] = scale(x[:, k : k + 1, i : i + 1, j : j + 1]).view(n)
            for layer, cache in zip(self.layers, caches):
                layer.end_row(cache)
        return x
