"""Row LSTM PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", 3.1).

A 7×7 mask-A convolution, residual Row LSTM layers (input-to-state a masked k×1 convolution along the row,
state-to-state a 1-D convolution over the row above), two 1×1 mask-B layers and a softmax over ``levels`` per
sub-pixel; the likelihood is exact (``genzoo.models.autoregressive``). The network and its equations are in
``genzoo.nn.row_lstm``, whose keyword arguments are the options of ``model.net``; sampling carries the LSTM state
row by row (``RowLSTMNet.generate``). Left out: the paper's exact depth and widths per data set (config values, see
``experiments/``), and class conditioning.
"""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.nn import build_network
from genzoo.nn.row_lstm import RowLSTMNet


class RowLSTM(AutoregressiveModel):
    def __init__(self, shape, levels: int, num_classes: int = 0, net: dict | None = None, **kwargs):
        if kwargs.get("conditional"):
            raise GenzooError("model=row_lstm has no class conditioning: set model.conditional=false.")
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        self.net = build_network(RowLSTMNet, net, data_channels=self.shape[0], levels=self.levels)
