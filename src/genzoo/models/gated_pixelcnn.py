"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

Vertical and horizontal stacks remove PixelCNN's blind spot; gated units
``tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h)`` replace ReLUs; ``conditional=true`` adds a learned embedding of
the class label h to every gate (the paper's class-conditional model). The network is
``genzoo.nn.pixelcnn.GatedPixelCNNNet``; its keyword arguments are the options of ``model.net``, apart from the
number of classes, which ``conditional`` decides. Left out: conditioning on embeddings other than class labels, and
the paper's PixelCNN++-style logistic mixtures (it uses a softmax, as here).
"""

from __future__ import annotations

from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.nn import build_network
from genzoo.nn.pixelcnn import GatedPixelCNNNet


class GatedPixelCNN(AutoregressiveModel):
    def __init__(
        self, shape, levels: int, num_classes: int = 0, net: dict | None = None, conditional: bool = False, **kwargs
    ):
        super().__init__(shape, levels, num_classes, conditional=conditional, **kwargs)
        self.save_hyperparameters()
        self.net = build_network(GatedPixelCNNNet, net, data_channels=self.shape[0], levels=self.levels,
                                 num_classes=self.num_classes if conditional else 0)
