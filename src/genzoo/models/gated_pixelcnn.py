"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

Vertical and horizontal stacks remove PixelCNN's blind spot; gated units
``tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h)`` replace ReLUs; ``conditional=true`` adds a learned embedding of
the class label h to every gate (the paper's class-conditional model). The network is
``genzoo.nn.pixelcnn.GatedPixelCNNNet``. Left out: conditioning on embeddings other than class labels, and the
paper's PixelCNN++-style logistic mixtures (it uses a softmax, as here).
"""

from __future__ import annotations

from genzoo.models.autoregressive import AutoregressiveModel, require_odd_kernels
from genzoo.nn.pixelcnn import GatedPixelCNNNet


class GatedPixelCNN(AutoregressiveModel):
    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        channels: int = 64,
        layers: int = 8,
        kernel_size: int = 5,
        first_kernel_size: int = 7,
        head_channels: int = 256,
        dropout: float = 0.0,
        conditional: bool = False,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, conditional=conditional, **kwargs)
        require_odd_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.save_hyperparameters()
        self.net = GatedPixelCNNNet(
            self.shape[0], self.levels, channels, layers, kernel_size, first_kernel_size, head_channels,
            self.num_classes if conditional else 0, dropout,
        )
