"""Row LSTM PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", 3.1).

A 7×7 mask-A convolution, residual Row LSTM layers (input-to-state a masked k×1 convolution along the row,
state-to-state a 1-D convolution over the row above), two 1×1 mask-B layers and a softmax over ``levels`` per
sub-pixel; the likelihood is exact (``genzoo.models.autoregressive``). The network and its equations are in
``genzoo.nn.row_lstm``; sampling carries the LSTM state row by row (``RowLSTMNet.generate``). Left out: the paper's
exact depth and widths per data set (config values, see ``experiments/``), and class conditioning.
"""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.models.autoregressive import AutoregressiveModel, require_odd_kernels
from genzoo.nn.row_lstm import RowLSTMNet


class RowLSTM(AutoregressiveModel):
    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        hidden: int = 16,
        layers: int = 7,
        kernel_size: int = 3,
        state_kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 32,
        dropout: float = 0.0,
        **kwargs,
    ):
        if kwargs.get("conditional"):
            raise GenzooError("model=row_lstm has no class conditioning: set model.conditional=false.")
        super().__init__(shape, levels, num_classes, **kwargs)
        require_odd_kernels(kernel_size=kernel_size, state_kernel_size=state_kernel_size,
                            first_kernel_size=first_kernel_size)
        self.save_hyperparameters()
        self.net = RowLSTMNet(
            self.shape[0], self.levels, hidden, layers, kernel_size, state_kernel_size, first_kernel_size,
            head_channels, dropout,
        )
