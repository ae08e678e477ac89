"""Vector quantisation and the VQ-VAE's networks (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete
Representation Learning", section 3 and appendix A.1).

``VectorQuantizer`` holds a codebook e_1 … e_K ∈ R^D and replaces every D-vector z of an encoder's map z_e
(B, D, h, w) by its nearest code,

    k(z) = argmin_k ‖z − e_k‖²,     z_q = e_{k(z)},

passing gradients straight through to the encoder, z_e + sg[z_q − z_e] (forward: z_q; backward: the identity), and
gives the two terms that train the codebook and keep the encoder near it,

    codebook   = mean over positions and dims of (sg[z_e] − z_q)²,
    commitment = mean over positions and dims of (z_e − sg[z_q])²

(the paper's squared norms averaged over the N latents, and here over the D dimensions too, as DeepMind's Sonnet
module does, so their scale does not grow with D). With ``ema=True`` the codebook follows exponential moving
averages instead of the codebook term (appendix A.1, decay γ), with Laplace smoothing of the counts so that no
code divides by zero:

    N_k ← γ N_k + (1 − γ) n_k,      m_k ← γ m_k + (1 − γ) Σ_{z: k(z)=k} z,
    Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j,      e_k = m_k / Ñ_k,

n_k being the batch's count of vectors nearest to code k. (N starts at 1 and m at the initial codes, one
pseudo-observation each, so e = m/N holds from the first step.) A code left unused by ``restart_after`` training
steps in a row is dead: it is re-drawn from the batch's encoder outputs (as in Dhariwal et al. 2020, "Jukebox"), so
the codebook does not collapse onto a few codes. Codebook updates and restarts happen only in training mode, and
under DDP the counts and sums are summed over processes and the restarted codes broadcast from rank 0, so all
processes keep the same codebook.

``vq_encoder_decoder`` builds the paper's networks: the autoencoder's strided convolutions (``downsamplings``
halvings of the image), residual blocks (ReLU, 3×3 convolution, ReLU, 1×1 convolution; section 4.1) and a 1×1
convolution to D channels; the decoder mirrors it up to the parameters of an output distribution per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo.errors import GenzooError
from genzoo.nn.autoencoder import _widths, downsampling_layers, upsampling_layers


def _sum_over_processes(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """(N,) index of the nearest code to each row of z (N, D), by ‖z‖² − 2 z·e + ‖e‖² (one matrix product)."""
    distances = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1)  # (N, K)
    return distances.argmin(1)


def perplexity(counts: Tensor) -> Tensor:
    """exp of the entropy of the codes' frequencies: K when all are used equally, 1 when one code takes all."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, code_dim: int, ema: bool = True, decay: float = 0.99,
                 epsilon: float = 1e-5, restart_after: int = 100):
        super().__init__()
        self.size, self.dim = int(codebook_size), int(code_dim)
        self.ema, self.decay, self.epsilon, self.restart_after = bool(ema), float(decay), float(epsilon), int(
            restart_after)
        init = torch.empty(self.size, self.dim).uniform_(-1 / self.size, 1 / self.size)
        if self.ema:  # moved by averages, not by the optimiser
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(self.size))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("steps_unused", torch.zeros(self.size, dtype=torch.long))
        self.last_counts: Tensor | None = None  # (K,) the last batch's code counts, for perplexity and codes in use

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, D, h, w) codes of an index map (B, h, w)."""
        return F.embedding(indices, self.codebook).movedim(-1, 1)

    def quantize(self, z_e: Tensor) -> Tensor:
        """(B, h, w) indices of the nearest codes to the encoder's map z_e (B, D, h, w)."""
        flat = z_e.movedim(1, -1).reshape(-1, self.dim)
        return nearest_codes(flat.float(), self.codebook.float()).view(z_e.shape[0], *z_e.shape[2:])

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(straight-through z_q (B, D, h, w), indices (B, h, w), codebook term, commitment term); updates the
        codebook (EMA, restarts) when training."""
        indices = self.quantize(z_e)
        z_q = self.lookup(indices).to(z_e.dtype)
        codebook_loss = F.mse_loss(z_q, z_e.detach()) if not self.ema else z_e.new_zeros(())
        commitment_loss = F.mse_loss(z_e, z_q.detach())
        flat = z_e.detach().movedim(1, -1).reshape(-1, self.dim).float()
        counts = torch.bincount(indices.flatten(), minlength=self.size)
        if self.training and torch.is_grad_enabled():
            counts = _sum_over_processes(counts)
            if self.ema:
                self.ema_update(flat, indices.flatten(), counts)
            self.restart_dead_codes(flat, counts)
        self.last_counts = counts
        return z_e + (z_q - z_e).detach(), indices, codebook_loss, commitment_loss

    @torch.no_grad()
    def ema_update(self, z: Tensor, indices: Tensor, counts: Tensor) -> None:
        """The moving averages of appendix A.1 for vectors z (N, D) nearest to codes ``indices`` (N,), ``counts``
        (K,) their (all processes') number per code."""
        sums = _sum_over_processes(torch.zeros_like(self.ema_sum).index_add_(0, indices, z))  # (K, D)
        self.ema_count.mul_(self.decay).add_(counts.float(), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.size * self.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor, counts: Tensor) -> None:
        """Codes unused for ``restart_after`` steps in a row become encoder outputs of this batch, z (N, D)."""
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_after <= 0:
            return
        dead = (self.steps_unused >= self.restart_after).nonzero().flatten()
        if len(dead) == 0:
            return
        fresh = z[torch.randint(len(z), (len(dead),), device=z.device)]  # (dead, D)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, src=0)
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        if self.ema:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = fresh
        self.steps_unused[dead] = 0


class ResidualBlock(nn.Module):
    """x + conv1×1(ReLU(conv3×3(ReLU(x)))), the paper's block (section 4.1)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def vq_encoder_decoder(
    shape: Sequence[int],
    code_dim: int,
    decoder_out_channels: int,
    *,
    channels: int = 64,
    downsamplings: int = 1,
    resblocks: int = 2,
) -> tuple[nn.Module, nn.Module]:
    """An encoder (B, C, H, W) in [-1, 1] → z_e (B, code_dim, H/2^d, W/2^d) and a decoder from such a map to
    ``decoder_out_channels`` per pixel, d = ``downsamplings``. The keyword-only arguments are ``model.net``."""
    c, h, w = shape
    d = int(downsamplings)
    if d < 0 or h % 2**d or w % 2**d:
        raise GenzooError(f"model.net.downsamplings={downsamplings} does not halve a {h}×{w} image exactly: choose "
                          f"d ≥ 0 with height and width divisible by 2^d (the code map is then (H/2^d)×(W/2^d)).")
    top = _widths(channels, d)[-1]
    encoder = nn.Sequential(*downsampling_layers(c, channels, d),
                            *[ResidualBlock(top, top) for _ in range(resblocks)], nn.ReLU(),
                            nn.Conv2d(top, code_dim, 1))
    decoder = nn.Sequential(nn.Conv2d(code_dim, top, 3, padding=1),
                            *[ResidualBlock(top, top) for _ in range(resblocks)], nn.ReLU(),
                            *upsampling_layers(channels, d, decoder_out_channels))
    return encoder, decoder
