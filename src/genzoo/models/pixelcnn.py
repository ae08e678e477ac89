"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.4).

A stack of masked convolutions gives every sub-pixel a softmax over its ``levels`` values given all earlier
sub-pixels it can see; the likelihood is exact (see ``genzoo.models.autoregressive``). The network is
``genzoo.nn.pixelcnn.PixelCNNNet``; its keyword arguments are the options of ``model.net``. Left out: the paper's
256-way softmax is kept, but not its exact depth and width for each data set (they are config values), and the
blind spot of stacked masked kernels is kept on purpose: it is the model the paper describes, and Gated PixelCNN
removes it.
"""

from __future__ import annotations

from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.nn import build_network
from genzoo.nn.pixelcnn import PixelCNNNet


class PixelCNN(AutoregressiveModel):
    def __init__(self, shape, levels: int, num_classes: int = 0, net: dict | None = None, **kwargs):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        self.net = build_network(PixelCNNNet, net, data_channels=self.shape[0], levels=self.levels)
