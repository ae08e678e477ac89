"""Encoders and decoders shared by the autoencoder and the VAE: plain ``nn.Module``s between images and codes.

* ``ConvEncoder`` / ``ConvDecoder``: a 3×3 convolution, then strided 4×4 convolutions that halve the image
  (8 → 4; 28 → 14 → 7; 32 → … → 4; 64 → … → 4) while doubling the channels (at most 8×), and a linear layer to the
  code; the decoder mirrors it with transposed convolutions, as in DCGAN-style autoencoders. Square grey or RGB
  images of 8×8, 28×28, 32×32 and 64×64 pixels only, so that every halving is exact.
* ``MLPEncoder`` / ``MLPDecoder``: ``depth`` tanh layers of ``hidden`` units, as in the VAE (Kingma & Welling
  2014, appendix C) and IWAE (Burda et al. 2016) papers; any image shape.

Encoders map ``(B, C, H, W)`` floats in [-1, 1] to ``(B, out_dim)``; decoders map ``(B, z_dim)`` to
``(B, out_channels, H, W)``, where ``out_channels`` is whatever the model needs per pixel (C reconstructed values
for the autoencoder, C·levels logits for the VAE). No normalisation layers: a code must not depend on the batch.

With ``num_classes > 0`` (the conditional VAE) both take class labels y (B,) too: a learned per-class bias on the
first layer's pre-activations, which for a linear first layer is exactly a one-hot label concatenated to the input
(for the convolutional encoder it is so away from the border of the zero-padded first convolution). The biases
start at zero, so a conditional network starts as the unconditional one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from genzoo.errors import GenzooError

# image size → number of stride-2 halvings down to a 4×4 (7×7 for 28×28) feature map
CONV_DOWNSAMPLINGS = {8: 1, 28: 2, 32: 3, 64: 4}
ARCHS = ("conv", "mlp")


def check_conv_shape(shape: Sequence[int]) -> None:
    c, h, w = shape
    if c not in (1, 3) or h != w or h not in CONV_DOWNSAMPLINGS:
        raise GenzooError(
            f"model.net.arch=conv supports square grey or RGB images of 8×8, 28×28, 32×32 and 64×64 pixels, not "
            f"shape {list(shape)}: resize the data to one of these sizes or set model.net.arch=mlp."
        )


def _widths(channels: int, downsamplings: int) -> list[int]:
    """Feature channels after the first convolution and after each halving."""
    return [channels * min(2**i, 8) for i in range(downsamplings + 1)]


def label_bias(num_classes: int, size: int) -> nn.Embedding | None:
    """A zero-initialised learned bias of ``size`` per class, or None for an unconditional network."""
    if num_classes <= 0:
        return None
    embed = nn.Embedding(num_classes, size)
    nn.init.zeros_(embed.weight)
    return embed


def first_layer(layers: nn.Sequential, embed: nn.Embedding | None, x: Tensor, y: Tensor | None) -> Tensor:
    """``layers(x)`` with the label's bias added after the first layer (broadcast over any pixels)."""
    h = layers[0](x)
    if embed is not None:
        if y is None:
            raise ValueError("a conditional network needs the class labels y")
        bias = embed(y)
        h = h + bias.view(*bias.shape, *[1] * (h.dim() - 2))
    return layers[1:](h)


def downsampling_layers(in_channels: int, channels: int, halvings: int) -> list[nn.Module]:
    """A 3×3 convolution to ``channels``, then ``halvings`` strided 4×4 convolutions, each halving the map and
    doubling the channels (at most 8×), ReLU after each: (B, in_channels, H, W) → (B, _widths(…)[-1], H/2^n, W/2^n).
    The convolutional part of ``ConvEncoder``, and the VQ-VAE's encoder before its residual blocks."""
    widths = _widths(channels, halvings)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.ReLU()]
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(w_in, w_out, 4, stride=2, padding=1), nn.ReLU()]
    return layers


def upsampling_layers(channels: int, halvings: int, out_channels: int) -> list[nn.Module]:
    """The mirror of ``downsampling_layers``: ``halvings`` transposed 4×4 convolutions (ReLU after each) from
    ``_widths(…)[-1]`` channels, then a 3×3 convolution to ``out_channels`` per pixel."""
    widths = _widths(channels, halvings)[::-1]
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.ReLU()]
    return layers + [nn.Conv2d(widths[-1], out_channels, 3, padding=1)]


class ConvEncoder(nn.Module):
    def __init__(self, shape: Sequence[int], out_dim: int, channels: int = 32, num_classes: int = 0):
        super().__init__()
        check_conv_shape(shape)
        c, size, _ = shape
        n = CONV_DOWNSAMPLINGS[size]
        widths = _widths(channels, n)
        self.features = nn.Sequential(*downsampling_layers(c, channels, n), nn.Flatten())
        self.out = nn.Linear(widths[-1] * (size >> n) ** 2, out_dim)
        self.embed = label_bias(num_classes, widths[0])

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.out(first_layer(self.features, self.embed, x, y))


class ConvDecoder(nn.Module):
    def __init__(self, shape: Sequence[int], z_dim: int, out_channels: int, channels: int = 32,
                 num_classes: int = 0):
        super().__init__()
        check_conv_shape(shape)
        _, size, _ = shape
        n = CONV_DOWNSAMPLINGS[size]
        widths = _widths(channels, n)[::-1]
        self.base = (widths[0], size >> n, size >> n)
        self.input = nn.Sequential(nn.Linear(z_dim, math.prod(self.base)), nn.ReLU())
        self.up = nn.Sequential(*upsampling_layers(channels, n, out_channels))
        self.embed = label_bias(num_classes, math.prod(self.base))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.up(first_layer(self.input, self.embed, z, y).view(len(z), *self.base))  # (B, out_ch, H, W)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, shape: Sequence[int], out_dim: int, hidden: int = 256, depth: int = 2, num_classes: int = 0):
        super().__init__()
        self.net = _mlp([math.prod(shape)] + [hidden] * depth + [out_dim])
        self.embed = label_bias(num_classes, hidden)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return first_layer(self.net, self.embed, x.flatten(1), y)


class MLPDecoder(nn.Module):
    def __init__(self, shape: Sequence[int], z_dim: int, out_channels: int, hidden: int = 256, depth: int = 2,
                 num_classes: int = 0):
        super().__init__()
        _, h, w = shape
        self.out_shape = (out_channels, h, w)
        self.net = _mlp([z_dim] + [hidden] * depth + [math.prod(self.out_shape)])
        self.embed = label_bias(num_classes, hidden)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return first_layer(self.net, self.embed, z, y).view(len(z), *self.out_shape)  # (B, out_channels, H, W)


def encoder_decoder(
    shape: Sequence[int],
    z_dim: int,
    encoder_out: int,
    decoder_out_channels: int,
    *,
    arch: str = "conv",
    channels: int = 32,
    hidden: int = 256,
    depth: int = 2,
    num_classes: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """An encoder to ``encoder_out`` numbers and a decoder from ``z_dim`` to ``decoder_out_channels`` per pixel,
    both told the class label when ``num_classes > 0``.

    The keyword-only arguments other than ``num_classes`` are the networks' options (``model.net`` in the VAE's
    and the autoencoder's YAML); the others come from the model.
    """
    if arch not in ARCHS:
        raise GenzooError(f"model.net.arch={arch!r} is unknown: use 'conv' (8×8, 28×28, 32×32, 64×64 images) or "
                          "'mlp' (any shape).")
    if int(z_dim) < 1:
        raise GenzooError(f"model.z_dim={z_dim} leaves no code: choose z_dim of 1 or more.")
    if arch == "conv":
        return (ConvEncoder(shape, encoder_out, channels, num_classes),
                ConvDecoder(shape, z_dim, decoder_out_channels, channels, num_classes))
    if int(depth) < 1 or int(hidden) < 1:
        raise GenzooError(f"model.net.depth={depth} and model.net.hidden={hidden} make no MLP: choose both of 1 or "
                          "more.")
    return (MLPEncoder(shape, encoder_out, hidden, depth, num_classes),
            MLPDecoder(shape, z_dim, decoder_out_channels, hidden, depth, num_classes))
