"""Row LSTM (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.1).

The image is processed row by row from the top, a whole row at once. For row i,

    [o_i, f_i, i_i, g_i] = σ(K^ss ⊛ h_{i-1} + K^is ⊛ x_i),
    c_i = f_i ⊙ c_{i-1} + i_i ⊙ g_i,    h_i = o_i ⊙ tanh(c_i)

where K^is ⊛ x is a k×1 convolution along the row, masked (mask B) so that position j reads columns j-k//2 … j of
its own row, and computed for the whole map before the recurrence; K^ss ⊛ h_{i-1} is an unmasked 1-D convolution
(kernel 3 in the paper) over the previous row's hidden state. Each step widens the context by one column on either
side per row upwards, so a pixel sees a triangle above it (plus the first layer's 7×7 reach), not the whole past:
the tests pin that triangle.

Sampling is fully incremental: ``K^ss ⊛ h_{i-1}`` is computed once when row i starts, and pixel (i, j) then needs
only columns ≤ j of row i's input and c_{i-1} at column j, so each sub-pixel costs one LSTM step per layer.
Left out: nothing of the layer; the network's depth and widths are config values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.masked import MaskedConv2d, masked_weight, require_odd_kernels
from genzoo.nn.pixelrnn import PixelRNNNet, lstm_update, pointwise


class RowLSTM(nn.Module):
    """One residual Row LSTM layer: ``(B, 2h, H, W)`` → ``(B, 2h, H, W)`` with ``h = hidden``."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        data_channels: int,
        kernel_size: int = 3,
        state_kernel_size: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if kernel_size % 2 == 0 or state_kernel_size % 2 == 0:
            raise ValueError("Row LSTM kernels must have odd sizes, so that a row's centre is defined")
        self.hidden, self.kernel_size = hidden, kernel_size
        self.input_to_state = MaskedConv2d(channels, 4 * hidden, (1, kernel_size), "B", data_channels, out_repeat=4)
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, state_kernel_size, padding=state_kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.residual = MaskedConv2d(hidden, channels, 1, "B", data_channels)

    def forward(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape
        gates_in = self.input_to_state(x)  # (B, 4h, H, W)
        h = c = x.new_zeros(b, self.hidden, width)  # the state "above" row 0
        rows = []
        for gates_i in gates_in.unbind(2):  # unbind: one backward op, not a full-size zero map per row
            h, c = lstm_update(gates_i + self.state_to_state(h), c)  # (B, h, W) each
            rows.append(h)
        return x + self.residual(self.dropout(torch.stack(rows, dim=2)))

    # ---- incremental sampling ------------------------------------------------------------------------------
    def init_cache(self, n: int, width: int) -> dict:
        half = self.kernel_size // 2
        weight = masked_weight(self.input_to_state)
        zeros = self.input_to_state.weight.new_zeros
        return {
            # the columns right of the centre are masked out, so only j-half … j are read
            "w_is": weight[:, :, 0, : half + 1].flatten(1), "b_is": self.input_to_state.bias,  # (4h, 2h·(half+1))
            "residual": pointwise(self.residual),
            # this row's input features, with `half` zero columns on the left like the convolution's padding
            "row": zeros(n, self.input_to_state.in_channels, width + half),
            "h_above": zeros(n, self.hidden, width), "c_above": zeros(n, self.hidden, width),
            "h": zeros(n, self.hidden, width), "c": zeros(n, self.hidden, width),
        }

    def start_row(self, cache: dict) -> None:
        cache["ss"] = self.state_to_state(cache["h_above"])  # (n, 4h, W): all the previous row contributes

    def step(self, cache: dict, j: int, features: Tensor) -> Tensor:
        half = self.kernel_size // 2
        cache["row"][:, :, half + j] = features
        window = cache["row"][:, :, j : j + half + 1]  # (n, 2h, half+1): columns j-half … j
        gates = F.linear(window.flatten(1), cache["w_is"], cache["b_is"]) + cache["ss"][:, :, j]  # (n, 4h)
        h, c = lstm_update(gates, cache["c_above"][:, :, j])
        cache["h"][:, :, j], cache["c"][:, :, j] = h, c
        return features + F.linear(self.dropout(h), *cache["residual"])

    def end_row(self, cache: dict) -> None:
        # the finished row becomes the row above; the old buffers are overwritten column by column next row
        cache["h_above"], cache["h"] = cache["h"], cache["h_above"]
        cache["c_above"], cache["c"] = cache["c"], cache["c_above"]


class RowLSTMNet(PixelRNNNet):
    def __init__(
        self,
        data_channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 7,
        kernel_size: int = 3,
        state_kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 32,
        dropout: float = 0.0,
    ):
        # Before the layers are built: their own ValueError names no config key.
        require_odd_kernels(kernel_size=kernel_size, state_kernel_size=state_kernel_size)
        lstm_layers = [
            RowLSTM(2 * hidden, hidden, data_channels, kernel_size, state_kernel_size, dropout) for _ in range(layers)
        ]
        super().__init__(data_channels, levels, hidden, lstm_layers, first_kernel_size, head_channels)
