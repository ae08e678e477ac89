"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma 2017): the PixelCNN with a discretized logistic mixture likelihood,
conditioning on whole pixels, down- and up-sampling with short-cuts, and dropout.

The likelihood is exact, as for every autoregressive model (``genzoo.models.autoregressive``):

    log p(x) = Σ_{i,j} log p(x_{i,j} | x_{<(i,j)}),
    p(x_{i,j} | x_{<(i,j)}) = Σ_m π_m Π_c P(x_{c,i,j} | μ'_{c,m}, s_{c,m}),

the inner P a logistic discretised to the data's ``levels`` bins (the outer two stretched to ±∞), μ'_{c,m} the
component's mean moved linearly by the pixel's earlier channels (eq. 2 and section 2.2; the maths and its
numerics are in ``genzoo.nn.distributions.DiscretizedLogisticMixture``). The network
(``genzoo.nn.pixelcnn_pp.PixelCNNPPNet``, its keyword arguments the options of ``model.net``) gives the π, μ, s and
coefficients of every pixel from the pixels before it. ``conditional=true`` adds a learned embedding of the class
label to every gated block. Sampling is cached (``genzoo.nn.fast_pixelcnn_pp``).

Left out: weight normalisation with data-dependent initialisation and Polyak averaging of the parameters (the
paper's; plain AdamW here), the paper's CIFAR-10 width and depth as the default (a config value: 160 filters and 5
blocks per resolution in ``experiments/cifar10_pixelcnn_pp.yaml``), and a categorical output for this network
(with whole-pixel conditioning it would make the channels independent given the past).
"""

from __future__ import annotations

from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.nn import build_network
from genzoo.nn.pixelcnn_pp import PixelCNNPPNet


class PixelCNNPP(AutoregressiveModel):
    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        net: dict | None = None,
        components: int = 10,
        conditional: bool = False,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, conditional=conditional, **kwargs)
        self.save_hyperparameters()
        self.net = build_network(PixelCNNPPNet, net, data_channels=self.shape[0], levels=self.levels,
                                 components=components, num_classes=self.num_classes if conditional else 0)
        self.distribution = self.net.distribution
