"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.4).

A stack of masked convolutions gives every sub-pixel a softmax over its ``levels`` values given all earlier
sub-pixels it can see; the likelihood is exact (see ``genzoo.models.autoregressive``). The network is
``genzoo.nn.pixelcnn.PixelCNNNet``. Left out: the paper's 256-way softmax is kept, but not its exact depth and
width for each data set (they are config values), and the blind spot of stacked masked kernels is kept on
purpose: it is the model the paper describes, and Gated PixelCNN removes it.
"""

from __future__ import annotations

from genzoo.models.autoregressive import AutoregressiveModel, require_odd_kernels
from genzoo.nn.pixelcnn import PixelCNNNet


class PixelCNN(AutoregressiveModel):
    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        channels: int = 96,
        blocks: int = 6,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_channels: int = 256,
        dropout: float = 0.0,
        bottleneck: bool = True,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, **kwargs)
        require_odd_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.save_hyperparameters()
        self.net = PixelCNNNet(
            self.shape[0], self.levels, channels, blocks, kernel_size, first_kernel_size, head_channels, dropout,
            bottleneck,
        )
