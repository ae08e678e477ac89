"""Diagonal BiLSTM (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.2).

The input map is skewed (row i moved right by i, ``genzoo.nn.pixelrnn.skew``) so that each diagonal becomes a
column, and an LSTM (equation 3) runs column by column: the input-to-state part K^is is a 1×1 convolution (mask B),
the state-to-state part K^ss a 2×1 convolution over the previous column, so in image coordinates

    [o, f, i, g](i, j) = σ(K^is x(i, j) + K^ss [h(i-1, j); h(i, j-1)]),    c(i, j) = f ⊙ c(i, j-1) + i ⊙ g,
    h(i, j) = o ⊙ tanh(c(i, j)).

The second direction runs the same on the mirrored map (right to left), so it reads h(i-1, j) and h(i, j+1).
It sees pixels to the right in row i, so its output map is shifted down one row before it is added to the
first's: the sum at (i, j) then reads every earlier pixel of the layer's input, the paper's full dependency
field. One exception on the image itself, which the paper does not mention and the tests pin: no feature of row i
depends on that row's last sub-pixel (mask A hides it at (i, W-1), and nothing lies to its right), so only the
first 7×7 layer brings it into row i+1, at columns ≥ W-4; pixels (i+1, j < W-4) never see it.

States at the skew's padding positions are reset to zero after every step, so outside the image the state is
zero, as above row 0; the paper does not say what those positions hold.

Both directions run in one loop over the H+W-1 columns: their gates are stacked along channels and the
state-to-state convolution is grouped (one group per direction).

Sampling: the left-to-right direction at (i, j) needs only h, c at (i, j-1) and h at (i-1, j), so it is carried
pixel by pixel. The right-to-left direction's row i needs the whole of row i, so it is run over that row
(W steps) when the row is complete; the shifted map uses it only from row i+1 on, so nothing is recomputed:
each sub-pixel costs one step per layer, plus W steps per layer at each row's end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.masked import MaskedConv2d
from genzoo.nn.pixelrnn import PixelRNNNet, lstm_update, pointwise, skew, unskew


class DiagonalBiLSTM(nn.Module):
    """One residual Diagonal BiLSTM layer: ``(B, 2h, H, W)`` → ``(B, 2h, H, W)`` with ``h = hidden``."""

    def __init__(self, channels: int, hidden: int, data_channels: int, dropout: float = 0.0):
        super().__init__()
        self.hidden = hidden
        # Gates of both directions: blocks [o, f, i, g] (left to right), then [o, f, i, g] (right to left).
        self.input_to_state = MaskedConv2d(channels, 8 * hidden, 1, "B", data_channels, out_repeat=8)
        # Kernel tap 0 reads the row above (h(i-1, j)), tap 1 the previous column of the same row (h(i, j∓1)).
        self.state_to_state = nn.Conv1d(2 * hidden, 8 * hidden, 2, groups=2)
        self.dropout = nn.Dropout(dropout)
        self.residual = MaskedConv2d(hidden, channels, 1, "B", data_channels)

    def forward(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape
        left_in, right_in = self.input_to_state(x).chunk(2, dim=1)  # (B, 4h, H, W) each
        gates_in = skew(torch.cat([left_in, right_in.flip(3)], dim=1))  # (B, 8h, H, H+W-1)
        inside = skew(x.new_ones(1, 1, height, width))[0, 0]  # (H, H+W-1): 1 on image positions
        h = c = x.new_zeros(b, 2, self.hidden, height)  # (B, direction, h, H): the column left of the image
        columns = []
        # unbind, not indexing: the backward pass of one column's slice would write a zero map as big as the input
        for gates_d, inside_d in zip(gates_in.unbind(3), inside.unbind(1)):
            # row i reads rows i-1 and i of the previous column; each direction its own group
            gates = gates_d + self.state_to_state(F.pad(h.flatten(1, 2), (1, 0)))  # (B, 8h, H)
            h, c = lstm_update(gates.view(b, 2, 4 * self.hidden, height), c, dim=2)  # (B, 2, h, H) each
            h, c = h * inside_d, c * inside_d
            columns.append(h.flatten(1, 2))
        states = unskew(torch.stack(columns, dim=3), width)  # (B, 2h, H, W)
        left, right = states[:, : self.hidden], states[:, self.hidden :].flip(3)
        right = F.pad(right, (0, 0, 1, 0))[:, :, :height]  # shifted down one row: row i reads row i-1
        return x + self.residual(self.dropout(left + right))

    # ---- incremental sampling ------------------------------------------------------------------------------
    def init_cache(self, n: int, width: int) -> dict:
        hid = self.hidden
        w_is, b_is = pointwise(self.input_to_state)  # (8h, 2h), (8h,)
        w_ss, b_ss = self.state_to_state.weight, self.state_to_state.bias  # (8h, h, 2): group d is rows d·4h …
        zeros = w_is.new_zeros
        cache = {"residual": pointwise(self.residual), "row": zeros(n, self.input_to_state.in_channels, width)}
        for name, rows in (("left", slice(0, 4 * hid)), ("right", slice(4 * hid, 8 * hid))):
            cache[name] = {"w_is": w_is[rows], "b_is": b_is[rows], "w_above": w_ss[rows, :, 0],
                           "w_prev": w_ss[rows, :, 1], "b_ss": b_ss[rows]}
        # left to right: row i-1, and row i with one zero column in front (the state left of the image)
        cache["left_above"] = zeros(n, hid, width)
        cache["left_h"], cache["left_c"] = zeros(n, hid, width + 1), zeros(n, hid, width + 1)
        cache["right_above"] = zeros(n, hid, width)  # right to left, row i-1: what row i adds after the shift
        return cache

    def start_row(self, cache: dict) -> None:
        pass

    def step(self, cache: dict, j: int, features: Tensor) -> Tensor:
        p = cache["left"]
        cache["row"][:, :, j] = features
        gates = (F.linear(features, p["w_is"], p["b_is"]) + F.linear(cache["left_above"][:, :, j], p["w_above"])
                 + F.linear(cache["left_h"][:, :, j], p["w_prev"], p["b_ss"]))  # (n, 4h)
        h, c = lstm_update(gates, cache["left_c"][:, :, j])
        cache["left_h"][:, :, j + 1], cache["left_c"][:, :, j + 1] = h, c
        out = h + cache["right_above"][:, :, j]  # (n, h)
        return features + F.linear(self.dropout(out), *cache["residual"])

    def end_row(self, cache: dict) -> None:
        p = cache["right"]
        row = cache["row"].transpose(1, 2)  # (n, W, 2h)
        # everything but the recurrence along the row, for all columns at once
        gates_in = (F.linear(row, p["w_is"], p["b_is"]) + F.linear(cache["right_above"].transpose(1, 2), p["w_above"])
                    + p["b_ss"])  # (n, W, 4h)
        h = c = row.new_zeros(row.shape[0], self.hidden)  # the state right of the image
        right = torch.empty_like(cache["right_above"])
        for j in reversed(range(row.shape[1])):
            h, c = lstm_update(gates_in[:, j] + F.linear(h, p["w_prev"]), c)
            right[:, :, j] = h
        cache["right_above"] = right
        cache["left_above"] = cache["left_h"][:, :, 1:].clone()


class DiagonalBiLSTMNet(PixelRNNNet):
    def __init__(
        self,
        data_channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 7,
        first_kernel_size: int = 7,
        head_channels: int = 32,
        dropout: float = 0.0,
    ):
        lstm_layers = [DiagonalBiLSTM(2 * hidden, hidden, data_channels, dropout) for _ in range(layers)]
        super().__init__(data_channels, levels, hidden, lstm_layers, first_kernel_size, head_channels)
