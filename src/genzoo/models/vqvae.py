"""VQ-VAE, the first stage (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning").

An encoder maps an image to z_e(x) (D, h, w); each of its h·w vectors is replaced by the nearest of K learned codes
(``genzoo.nn.vq.VectorQuantizer``), giving a map of code indices k(x) ∈ {0 … K−1}^{h×w} and its codes z_q(x); the
decoder gives p(x | z_q), a **discrete** distribution over the data's levels (``decoder``: a categorical per
sub-pixel, or PixelCNN++'s discretized logistic mixture; ``genzoo.nn.distributions``). Training minimises
(paper, eq. 3)

    −log p(x | z_q(x)) / (C·H·W·ln 2)  +  codebook  +  β · commitment,

gradients reaching the encoder through the straight-through estimator z_e + sg[z_q − z_e]; with ``ema=true`` the
codebook follows moving averages instead of the codebook term (appendix A.1). The reconstruction term is in
bits/dim, as every genzoo training loss, and the two codebook terms are means over the code map's positions and
dimensions: the paper's β = 0.25 then weighs them as in DeepMind's reference module, whose reconstruction term is a
per-pixel mean as well.

The posterior is deterministic: q(k | x) puts all its mass on k(x). During this stage the prior over the codes is
uniform, p(k) = K^{−h·w} (the paper keeps it so while training), so the ELBO is exact to compute:

    log p(x) ≥ E_q[log p(x|k)] − KL(q ‖ p) = log p(x | z_q(x)) − h·w·log K,

logged as ``{val,test}/elbo_bpd`` beside its two parts ``recon_bpd`` and ``prior_bpd`` (= h·w·log2 K / (C·H·W)).
``sample`` draws codes from that uniform prior, so its samples are poor on purpose: the second stage
(``genzoo.models.vqvae_prior``, ``model=vqvae_prior``) fits an autoregressive prior over k(x) with this model
frozen and replaces h·w·log K by −log p(k(x)) in the same bound. Codebook perplexity and the number of codes in
use are logged per epoch (``train/perplexity``, ``train/codes_used``).

Left out: training the prior jointly with the autoencoder (the paper leaves it as future work too); several
independent codes per position (the paper's CIFAR-10 latents are 8×8×10); a learned or hierarchical (VQ-VAE-2)
code map; with ``ema=false`` a restarted code keeps the optimiser's moment estimates of the code it replaces.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel
from genzoo.nn import build_network
from genzoo.nn.distributions import output_distribution
from genzoo.nn.vq import VectorQuantizer, perplexity, vq_encoder_decoder


class VQVAE(GenerativeModel):
    likelihood = "bound"

    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        codebook_size: int = 512,
        code_dim: int = 64,
        net: dict | None = None,
        commitment: float = 0.25,
        ema: bool = True,
        ema_decay: float = 0.99,
        restart_after: int = 100,
        decoder: Literal["categorical", "bernoulli", "logistic_mixture"] = "categorical",
        components: int = 10,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        if int(codebook_size) < 2:
            raise GenzooError(f"model.codebook_size={codebook_size} leaves nothing to choose: use 2 codes or more "
                              "(the paper uses 512).")
        self.commitment = float(commitment)
        options = {"components": components} if decoder == "logistic_mixture" else {}
        self.distribution = output_distribution(decoder, self.shape[0], self.levels, "model.decoder", **options)
        self.encoder, self.decoder = build_network(vq_encoder_decoder, net, shape=self.shape, code_dim=int(code_dim),
                                                   decoder_out_channels=self.distribution.params)
        self.quantizer = VectorQuantizer(codebook_size, code_dim, ema=ema, decay=ema_decay,
                                         restart_after=restart_after)
        with torch.no_grad():  # the code map's size, from the encoder itself
            self.code_shape = tuple(self.encoder(torch.zeros(1, *self.shape)).shape[2:])  # (h, w)
        self._terms: dict[str, Tensor] = {}

    @property
    def codebook_size(self) -> int:
        return self.quantizer.size

    # ---- the code ------------------------------------------------------------------------------------------
    def codes(self, x: Tensor) -> Tensor:
        """(B, h, w) indices of the nearest codes to the encoder's output for integer images x: k(x)."""
        return self.quantizer.quantize(self.encoder(self.scale(x)))

    def decoder_params(self, indices: Tensor) -> Tensor:
        """(B, P, H, W) parameters of p(x | z_q) for code maps (B, h, w)."""
        return self.decoder(self.quantizer.lookup(indices))

    def log_px_given_codes(self, x: Tensor, indices: Tensor) -> Tensor:
        """(B,) log p(x | z_q) in nats, summed over sub-pixels."""
        return self.distribution.log_prob(self.decoder_params(indices), x)

    def log_uniform_prior(self) -> float:
        """log p(k) of every code map under the uniform prior: −h·w·log K."""
        return -math.prod(self.code_shape) * math.log(self.codebook_size)

    # ---- the bound -----------------------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) the ELBO with the one-hot posterior and the uniform prior: log p(x | z_q(x)) − h·w·log K."""
        return self.log_px_given_codes(x, self.codes(x)) + self.log_uniform_prior()

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """−log p(x|z_q) in bits/dim + codebook term + β·commitment term, averaged over the batch."""
        z_st, indices, codebook, commitment = self.quantizer(self.encoder(self.scale(x)))
        recon = self.distribution.log_prob(self.decoder(z_st), x)  # (B,)
        counts = self.quantizer.last_counts
        self._terms = {"recon_bpd": self.bits_per_dim(recon).mean().detach(), "codebook_loss": codebook.detach(),
                       "commitment_loss": commitment.detach(), "perplexity": perplexity(counts),
                       "codes_used": (counts > 0).sum().float()}
        return self.bits_per_dim(recon).mean() + codebook + self.commitment * commitment

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        terms = {f"train/{k}": v for k, v in self._terms.items()}
        self.log_dict(terms, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(batch[0]))
        return loss

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        recon = self.bits_per_dim(self.log_px_given_codes(x, self.codes(x)))
        prior = self.bits_per_dim(torch.full_like(recon, self.log_uniform_prior()))
        return {"elbo_bpd": recon + prior, "recon_bpd": recon, "prior_bpd": prior}

    # ---- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_sample(self, indices: Tensor) -> Tensor:
        """(B, C, H, W) images drawn from p(x | z_q) for code maps (B, h, w)."""
        return self.distribution.sample(self.decoder_params(indices))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Code maps from the uniform prior this stage is trained with, then p(x | z_q): poor pictures, on purpose
        (the learned prior of ``model=vqvae_prior`` is what makes samples)."""
        indices = torch.randint(self.codebook_size, (n, *self.code_shape), device=self.device)
        return self.decode_sample(indices)
