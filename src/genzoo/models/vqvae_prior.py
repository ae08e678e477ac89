"""VQ-VAE, the second stage: a learned autoregressive prior over the frozen first stage's code maps (van den Oord,
Vinyals & Kavukcuoglu 2017, section 3.3: "After training, we fit an autoregressive distribution over z, p(z)").

The first stage (``model=vqvae``, ``genzoo.models.vqvae``) is read from its run folder, ``vqvae_dir`` (its
``config.yaml`` and best checkpoint), and frozen: its encoder maps each image to a code map k(x) ∈ {0 … K−1}^{h×w},
its decoder gives p(x | z_q). The prior p(k) is one of genzoo's own autoregressive models (``prior``: a model node
naming e.g. ``genzoo.models.GatedPixelCNN`` with its ``net`` options), instantiated over the space of code maps,
shape (1, h, w) with K levels — to it a code map is a one-channel image of K grey levels. It trains on the code
maps of the training images, −log p(k(x)); the data stay the images, so splits, metrics and callbacks are the
usual ones.

With the one-hot posterior q(k | x) = 1[k = k(x)], whose entropy is 0, the ELBO is

    log p(x) ≥ E_q[log p(x | k) + log p(k) − log q(k | x)] = log p(x | z_q(x)) + log p(k(x)),

the decoder's bits over the pixels plus the prior's bits over the code map, added per image before dividing by
the image's C·H·W dimensions: ``{val,test}/elbo_bpd`` (the bound, the monitor), ``recon_bpd`` and ``prior_bpd``
(its two parts; the first stage's uniform prior gave h·w·log2 K / (C·H·W) for the second). ``sample`` draws a code
map from the prior and then x from p(x | z_q), so the sample grid and FID see decoded images.

Two runs rather than one two-stage run: each stage is a plain genzoo run (its own checkpoints, resume, metrics and
sweeps), several priors can be tried on one first stage, and no model has to switch objectives mid-fit. The prior's
checkpoint holds the first stage's weights too, but building the model again (``genzoo-eval``, ``resume=``) reads
the first stage's ``config.yaml``, so keep that run folder. Left out: class-conditional priors, and priors over
several code maps (VQ-VAE-2).
"""

from __future__ import annotations

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import Tensor

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.models.autoregressive import AutoregressiveModel
from genzoo.models.base import GenerativeModel
from genzoo.models.vqvae import VQVAE
from genzoo.run.checkpoints import find_checkpoint, load_model
from genzoo.schema import check_target_node

DEFAULT_PRIOR = {"_target_": "genzoo.models.GatedPixelCNN"}


def load_first_stage(vqvae_dir: str | None) -> VQVAE:
    """The VQ-VAE of a ``model=vqvae`` run folder (its best checkpoint), or one sentence saying what is wrong."""
    if not vqvae_dir:
        raise GenzooError("model.vqvae_dir is not set: give the run folder of a finished `genzoo-train model=vqvae` "
                          "run (e.g. experiment=digits_vqvae_prior model.vqvae_dir=outputs/runs/RUN).")
    ckpt, run = find_checkpoint(vqvae_dir, arg="model.vqvae_dir", best=True)
    if run is None or not (run / "config.yaml").is_file():
        raise GenzooError(f"model.vqvae_dir={vqvae_dir} has no config.yaml of its run: give the run folder of a "
                          "`genzoo-train model=vqvae` run.")
    saved = OmegaConf.load(run / "config.yaml")
    target = str(saved.get("model", {}).get("_target_", "?"))
    if target.rsplit(".", 1)[-1] != VQVAE.__name__:
        raise GenzooError(f"model.vqvae_dir={vqvae_dir} is a run of {target}, not of a VQ-VAE: give the run folder "
                          "of a `genzoo-train model=vqvae` run (experiment=digits_vqvae).")
    return load_model(ckpt, saved)


def check_prior_node(node: dict) -> None:
    """The prior's config names an autoregressive model and only options it takes (before anything is loaded)."""
    target = node.get("_target_")
    if not target:
        raise GenzooError("model.prior names no _target_: give an autoregressive model, e.g. "
                          "model.prior._target_=genzoo.models.GatedPixelCNN.")
    check_target_node(node, "model.prior")  # importable, and each option one its constructor takes
    if not issubclass(get_class(target), AutoregressiveModel):
        raise GenzooError(f"model.prior._target_={target} is not an autoregressive model: use "
                          "genzoo.models.PixelCNN or genzoo.models.GatedPixelCNN.")


class VQVAEPrior(GenerativeModel):
    likelihood = "bound"

    def __init__(self, shape, levels: int, num_classes: int = 0, vqvae_dir: str | None = None,
                 prior: dict | None = None, **kwargs):
        super().__init__(shape, levels, num_classes, **kwargs)
        self.save_hyperparameters()
        node = dict(prior or DEFAULT_PRIOR)
        check_prior_node(node)
        vqvae = load_first_stage(vqvae_dir)
        if vqvae.shape != self.shape or vqvae.levels != self.levels:
            raise GenzooError(f"The VQ-VAE of model.vqvae_dir={vqvae_dir} was trained on images of shape "
                              f"{list(vqvae.shape)} with {vqvae.levels} levels, and this data has "
                              f"{list(self.shape)} with {self.levels}: train the prior on the first stage's data.")
        self.vqvae = vqvae.requires_grad_(False).eval()
        code_space = {"shape": (1, *vqvae.code_shape), "levels": vqvae.codebook_size, "num_classes": 0}
        try:
            self.prior = build(OmegaConf.create(node), "model.prior", **code_space)
        except GenzooError as e:  # the prior names its options model.*, the user wrote model.prior.*
            raise GenzooError(str(e).replace("model.", "model.prior.")) from None

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()  # frozen: no codebook averages, restarts or dropout, whatever Lightning sets
        return self

    def code_maps(self, x: Tensor) -> Tensor:
        """(B, 1, h, w) code maps k(x) of integer images: the prior's data."""
        with torch.no_grad():
            return self.vqvae.codes(x).unsqueeze(1)

    def terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) log p(x | z_q(x)) and (B,) log p(k(x)) in nats."""
        k = self.code_maps(x)
        with torch.no_grad():
            recon = self.vqvae.log_px_given_codes(x, k[:, 0])
        return recon, self.prior.log_likelihood(k)

    def log_likelihood(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) the bound log p(x | z_q(x)) + log p(k(x)) (see the module)."""
        recon, prior = self.terms(x)
        return recon + prior

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """−log p(k(x)) in bits per image dimension: the prior's part of the bound, the only part it changes."""
        return self.bits_per_dim(self.prior.log_likelihood(self.code_maps(x))).mean()

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        recon, prior = (self.bits_per_dim(t) for t in self.terms(x))
        return {"elbo_bpd": recon + prior, "recon_bpd": recon, "prior_bpd": prior}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """k ~ p(k) from the prior, then x ~ p(x | z_q(k)) from the frozen decoder."""
        return self.vqvae.decode_sample(self.prior.sample(n)[:, 0])

