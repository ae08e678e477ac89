"""Diagonal BiLSTM PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks",
section 3.2).

A 7×7 mask-A convolution, residual Diagonal BiLSTM layers (the map skewed so diagonals become columns, a 1×1
mask-B input-to-state and a 2×1 state-to-state convolution, in both directions, the right-to-left one shifted down
one row), two 1×1 mask-B layers and a softmax over ``levels`` per sub-pixel: every sub-pixel sees every earlier
one, and the likelihood is exact (``genzoo.models.autoregressive``). The network and its equations are in
``genzoo.nn.diagonal_bilstm``, whose keyword arguments are the options of ``model.net``; sampling carries both
recurrences (``DiagonalBiLSTMNet.generate``). Left out: the paper's exact depth and widths per data set (config
values, see ``experiments/``), and class conditioning.
"""

from __future__ import annotations

from genzoo.errors import GenzooError
from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.nn import build_network
from genzoo.nn.diagonal_bilstm import DiagonalBiLSTMNet


class DiagonalBiLSTM(AutoregressiveModel):
    def __init__(self, shape, levels: int, num_classes: int = 0, net: dict | None = None, **kwargs):
        if kwargs.get("conditional"):
            raise GenzooError("model=diagonal_bilstm has no class conditioning: set model.conditional=false.")
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        self.net = build_network(DiagonalBiLSTMNet, net, data_channels=self.shape[0], levels=self.levels)
