"""DCGAN generator and discriminator (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with
Deep Convolutional Generative Adversarial Networks", section 3 and fig. 1).

The paper's guidelines for a stable deep convolutional GAN, followed at every size:

* no pooling: strided convolutions in D, fractionally-strided (transposed, 4×4, stride 2) convolutions in G;
* batch norm in both, except at G's output layer and D's input layer;
* no fully connected hidden layers: G's first layer is a transposed convolution from the 1×1 code to a
  ``base``×``base`` map ("project and reshape"), D's last a ``base``×``base`` convolution to one logit;
* ReLU in G with a tanh output, LeakyReLU (slope 0.2) in D;
* weights drawn from N(0, 0.02) (batch-norm scales from N(1, 0.02)).

G doubles the resolution and halves the width at each layer, D mirrors it:

    8×8:   2 → 4 → 8        28×28: 7 → 14 → 28        32×32: 4 → 8 → 16 → 32        64×64: 4 → 8 → 16 → 32 → 64

Class conditioning, when ``num_classes > 0``: G concatenates a learned label embedding to z (Mirza & Osindero
2014); D adds the projection term ⟨e_y, φ(x)⟩ to its logit (Miyato & Koyama 2018, "cGANs with Projection
Discriminator"), with φ(x) D's last feature map, flattened.

Left out: the paper's widths (1024 channels at 4×4 for 64×64 LSUN) are config values; the 8×8 and 28×28
layouts are this package's own, built by the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.gan_layers import Norm, feature_norm, spectrally_normalised

# image side → (side of the first/last feature map, number of resolution doublings)
LAYOUTS = {8: (2, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}
SUPPORTED = "8×8, 28×28, 32×32 and 64×64"


def layout(shape: Sequence[int], networks: str = "DCGAN's networks") -> tuple[int, int]:
    """(base, doublings) for an image shape (C, H, W), or a GenzooError naming the supported sizes."""
    _, h, w = shape
    if h != w or h not in LAYOUTS:
        raise GenzooError(f"{networks} support {SUPPORTED} images, not {h}×{w}: choose data of one of those "
                          "sizes, or a model for any shape such as model=pixelcnn.")
    return LAYOUTS[h]


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's initialisation: every convolution N(0, 0.02); batch-norm scale N(1, 0.02) and shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) [and labels (B,)] → images (B, C, H, W) in [-1, 1]."""

    def __init__(self, shape: Sequence[int], z_dim: int = 100, width: int = 64, num_classes: int = 0):
        super().__init__()
        channels = shape[0]
        base, doublings = layout(shape)
        # The label gets as many dimensions as the noise, drawn N(0, 1) like z, so neither drowns the other.
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        code = z_dim * (2 if self.embed is not None else 1)
        ch = width * 2 ** (doublings - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(code, ch, base, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(),  # project and reshape
        ]
        for _ in range(doublings - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]  # no batch norm at the output
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self.net)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)  # (B, 2·z_dim)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] [and labels (B,)] → logits (B,) of "real" (or a critic's values).

    ``norm``: the hidden layers' normalisation — ``batch`` (DCGAN), ``layer`` (the WGAN-GP critic: no image's output
    depends on the others) or ``none``; null picks ``none`` under spectral normalisation (Miyato et al. 2018's
    "standard CNN" has none), ``batch`` otherwise. ``spectral_norm``: normalise every weight by its largest singular
    value (``genzoo.nn.gan_layers``; null: off, as in DCGAN).
    """

    def __init__(self, shape: Sequence[int], width: int = 64, num_classes: int = 0, norm: Norm | None = None,
                 spectral_norm: bool | None = None):
        super().__init__()
        channels = shape[0]
        base, doublings = layout(shape)
        self.norm: Norm = norm or ("none" if spectral_norm else "batch")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]  # no norm at the input
        ch = width
        for _ in range(doublings - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=self.norm == "none"), feature_norm(self.norm, ch * 2),
                       nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 1, base)  # the whole base×base map to one logit
        init_dcgan_weights(self)
        self.embed = None
        if num_classes > 0:
            # Same scale as the head it is added to: the projection starts as small as the unconditional logit.
            self.embed = nn.Embedding(num_classes, ch * base * base)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            spectrally_normalised(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x)  # (B, ch, base, base)
        logits = self.head(h).flatten()  # (B,)
        if self.embed is not None:
            logits = logits + (self.embed(y) * h.flatten(1)).sum(1)  # projection ⟨e_y, φ(x)⟩
        return logits
