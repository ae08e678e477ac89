"""The ResNet generator and discriminator of SNGAN for 32×32 images (Miyato, Kataoka, Koyama & Yoshida 2018,
"Spectral Normalization for Generative Adversarial Networks", appendix B.4, table 4; the residual blocks of
Gulrajani et al. 2017), with the conditional variants of Miyato & Koyama 2018 ("cGANs with Projection
Discriminator"): conditional batch norm in G, the projection term in D.

    G: z ∈ R^{z_dim} → linear → base×base×width → ResBlock up ×doublings → BN, ReLU, conv3×3 → tanh
    D: x → ResBlock down (the "optimised" first block) → ResBlock down ×(doublings - 2) → ResBlock ×2
         → ReLU → global sum pooling → φ(x) ∈ R^{width};   D(x, y) = wᵀφ(x) + b + ⟨e_y, φ(x)⟩

    G's block:  h = conv3(ReLU(CBN(conv3(up(ReLU(CBN(x, y)))), y))),  out = h + conv1(up(x))
    D's block:  h = conv3(ReLU(conv3(ReLU(x)))) [avg-pool 2],          out = h + [avg-pool] conv1(x)

For 32×32 (base 4, 3 doublings) this is the paper's network: G 4 → 8 → 16 → 32 with 256 channels, D down-samples
32 → 16 → 8 and keeps 8×8 for two blocks with 128 channels. Other sizes follow DCGAN's table
(``genzoo.nn.dcgan.LAYOUTS``) by the same rules, so the 8×8 digits get a G of two up-sampling blocks from 2×2 and
a D of one down-sampling block then two at 4×4; any other shape is refused with the list of supported sizes.

D is spectrally normalised by default (every convolution, the linear head and the class embedding) and has no batch
norm, so it serves as the critic of a gradient penalty too (Gulrajani et al.'s CIFAR-10 ResNet critic has none).
Weights start from Glorot-uniform, gain √2 in the residual paths and 1 in the short-cuts and heads, as in the
authors' Chainer code. Left out: the 48×48 STL-10 and 128×128 ImageNet networks, and G's class embedding for the
first linear layer (the class enters through conditional batch norm only, as in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.nn.dcgan import layout
from genzoo.nn.gan_layers import ConditionalBatchNorm2d, Norm, feature_norm, spectrally_normalised

NETWORKS = "The ResNet networks (model.arch=resnet)"


def glorot(module: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GeneratorBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm2d(cin, num_classes), ConditionalBatchNorm2d(cout, num_classes)
        self.conv1 = glorot(nn.Conv2d(cin, cout, 3, 1, 1), math.sqrt(2))
        self.conv2 = glorot(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2))
        self.shortcut = glorot(nn.Conv2d(cin, cout, 1))

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.conv1(up(F.relu(self.bn1(x, y))))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.shortcut(up(x))


class ResNetGenerator(nn.Module):
    """z (B, z_dim) [and labels (B,)] → images (B, C, H, W) in [-1, 1]."""

    def __init__(self, shape: Sequence[int], z_dim: int = 128, width: int = 256, num_classes: int = 0):
        super().__init__()
        self.base, doublings = layout(shape, NETWORKS)
        self.width = width
        self.linear = glorot(nn.Linear(z_dim, width * self.base**2))
        self.blocks = nn.ModuleList(GeneratorBlock(width, width, num_classes) for _ in range(doublings))
        self.bn = nn.BatchNorm2d(width)
        self.out = glorot(nn.Conv2d(width, shape[0], 3, 1, 1))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.linear(z).view(len(z), self.width, self.base, self.base)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DiscriminatorBlock(nn.Module):
    """``first``: no ReLU before the first convolution (its input is the image) and the short-cut pools first."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False, norm: Norm = "none"):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = glorot(nn.Conv2d(cin, cout, 3, 1, 1), math.sqrt(2))
        self.norm = feature_norm(norm, cout)
        self.conv2 = glorot(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2))
        self.shortcut = glorot(nn.Conv2d(cin, cout, 1)) if (down or cin != cout) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.norm(self.conv1(x if self.first else F.relu(x)))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.shortcut(F.avg_pool2d(x, 2))
        elif self.shortcut is not None:
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetDiscriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] [and labels (B,)] → D's outputs (B,).

    ``norm``: a normalisation between each block's convolutions, ``none`` by default (and for null), as in SNGAN;
    ``spectral_norm``: null or true normalise every weight (the paper), false leaves them free.
    """

    def __init__(self, shape: Sequence[int], width: int = 128, num_classes: int = 0, norm: Norm | None = None,
                 spectral_norm: bool | None = None):
        super().__init__()
        _, doublings = layout(shape, NETWORKS)
        self.norm: Norm = norm or "none"
        blocks = [DiscriminatorBlock(shape[0], width, down=True, first=True, norm=self.norm)]
        blocks += [DiscriminatorBlock(width, width, down=True, norm=self.norm) for _ in range(doublings - 2)]
        blocks += [DiscriminatorBlock(width, width, down=False, norm=self.norm) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = glorot(nn.Linear(width, 1))
        self.embed = None
        if num_classes > 0:
            self.embed = glorot(nn.Embedding(num_classes, width))
        if spectral_norm is None or spectral_norm:
            spectrally_normalised(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        phi = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, width): global sum pooling
        out = self.head(phi).flatten()  # (B,)
        if self.embed is not None:
            out = out + (self.embed(y) * phi).sum(1)  # projection ⟨e_y, φ(x)⟩
        return out
