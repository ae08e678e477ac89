"""GANs: a generator G maps noise z ~ N(0, I) to images, a discriminator D tells real from fake (Goodfellow et al.
2014, "Generative Adversarial Nets"); the networks of DCGAN (Radford et al. 2016, ``genzoo.nn.dcgan``, the default)
or SNGAN's ResNets (Miyato et al. 2018, ``genzoo.nn.sngan``, ``model.arch=resnet``).

The two-player game, played by alternating gradient steps (Goodfellow et al. 2014, Algorithm 1; the objectives and
their equations in ``genzoo.models.gan_losses``):

* D step: descend D's loss on a batch of real images and a batch of fakes, plus the penalties asked for — the
  gradient penalty λ·E[(‖∇D(x̂)‖ - 1)²] on interpolates (``model.gradient_penalty``, λ = 10 by default for
  ``wgan_gp``) and R1, γ/2·E[‖∇D(x)‖²] on the real images (``model.r1``). A penalty's gradient is a double
  backward through D, taken by ``manual_backward`` like the rest of the loss.
* G step, after every ``d_steps`` = k D steps: descend ``model.loss``'s generator loss — ``minimax``,
  ``non_saturating`` (the default), ``hinge`` or ``wgan_gp``.
* Batching: every training batch is one D step on fresh real images; every k-th batch is also followed by one
  G step on fresh noise (as many fakes as the batch has images, with its labels when conditional). An epoch of
  N batches thus holds N D steps and about N/k G steps; the pattern carries on across epochs (the counts are
  buffers, saved in checkpoints). Budget runs in epochs: Lightning's ``global_step`` counts D and G steps together.
* Noise comes from a generator of the step's own (``step_generator``: the run's seed, the rank, the step), so a
  resumed run draws what an uninterrupted one would and DDP ranks draw their own. Under DDP the strategy looks for
  unused parameters (``finds_unused_parameters``): each step leaves one player without gradients.
* Spectral norm's power iteration advances on D's forwards on real and fake images (and G's step), never on a
  gradient penalty's extra pass (``frozen_power_iteration``); R1 reuses D's forward on the real images.
* A gradient penalty or R1 needs each image's output to depend on that image alone: with either, D's ``norm``
  defaults to layer norm (DCGAN networks; the ResNet D has none) and batch norm is refused; with the gradient
  penalty, ``spectral_norm`` also defaults to off.
* Options: an exponential moving average of G's weights (sampled from, Karras et al. 2018 / Yazıcı et al. 2019),
  one-sided label smoothing of D's real targets (Salimans et al. 2016; logistic losses only), instance noise
  N(0, σ²) on D's inputs annealed linearly to 0 over the run (Sønderby et al. 2017), class conditioning
  (``model.conditional=true`` on labelled data: the projection discriminator of Miyato & Koyama 2018 in both
  architectures; G concatenates a label embedding to z in DCGAN's, conditional batch norm in the ResNet).
* Logged: ``train/loss_d``, ``train/loss_g``, gradient norms, each penalty (``train/gradient_penalty``,
  ``train/r1``); ``train/d_real``, ``train/d_fake`` as probabilities σ(l) for the logistic losses, a critic's raw
  means ``train/critic_real``, ``train/critic_fake`` otherwise, and for ``wgan_gp`` the Wasserstein estimate
  Ŵ = E[D(x)] - E[D(G(z))] as ``train/wasserstein`` and, on held-out images against fixed noise, ``val/wasserstein``.

No likelihood: ``sample`` maps G's tanh output back to the integers 0 … levels-1, so the grids and the
sample-quality metrics treat it as every other model; the best checkpoint is the epoch of the lowest ``val/fid`` of
these samples (``genzoo.run.selection``). Left out: real images are fed to D on their discrete grid as is (no dequantisation noise).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from genzoo.errors import GenzooError
from genzoo.models.base import GenerativeModel
from genzoo.models.gan_losses import WassersteinGP, gan_loss, gradient_penalty, r1_penalty
from genzoo.nn import build_network
from genzoo.nn.dcgan import Discriminator, Generator
from genzoo.nn.gan_layers import frozen_power_iteration
from genzoo.nn.sngan import ResNetDiscriminator, ResNetGenerator
from genzoo.nn.modes import evaluating


def ema_average(decay: float):
    """``avg_fn`` for AveragedModel: θ̄ ← θ̄ + (1 - d)(θ - θ̄) with d = min(decay, (1 + n)/(10 + n)) after n updates.

    The warm-up (that of TensorFlow's ExponentialMovingAverage) keeps the average near the recent weights while
    they move fast; a short run on small data would otherwise sample from weights of long ago.
    """

    def average(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        if not averaged.is_floating_point():  # batch norm's step counter: keep the current one
            return current
        d = ((1.0 + num_averaged) / (10.0 + num_averaged)).clamp(max=decay).to(averaged.dtype)
        return averaged + (1.0 - d) * (current - averaged)

    return average


ARCHITECTURES = {"dcgan": (Generator, Discriminator), "resnet": (ResNetGenerator, ResNetDiscriminator)}


class DCGAN(GenerativeModel):
    likelihood = None
    finds_unused_parameters = True  # a D step leaves G without gradients and a G step D

    def __init__(
        self,
        shape,
        levels: int,
        num_classes: int = 0,
        z_dim: int = 100,
        arch: Literal["dcgan", "resnet"] = "dcgan",
        generator: dict | None = None,
        discriminator: dict | None = None,
        loss: Literal["minimax", "non_saturating", "hinge", "wgan_gp"] = "non_saturating",
        gradient_penalty: float | None = None,
        r1: float = 0.0,
        d_steps: int = 1,
        ema: bool = True,
        ema_decay: float = 0.999,
        label_smoothing: float = 0.0,
        instance_noise: float = 0.0,
        conditional: bool = False,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        **kwargs,
    ):
        super().__init__(shape, levels, num_classes, lr=lr, **kwargs)
        self.save_hyperparameters()
        if self.scheduler_name != "none":
            raise GenzooError(f"DCGAN trains with constant learning rates, not model.scheduler={self.scheduler_name}: "
                              "set model.scheduler=none.")
        self.check_conditional(conditional)
        if int(d_steps) < 1:
            raise GenzooError(f"model.d_steps={d_steps} gives the discriminator no step: use 1 or more.")
        if instance_noise < 0:
            raise GenzooError(f"model.instance_noise={instance_noise} is a negative standard deviation: use 0 (off) "
                              "or e.g. 0.1.")
        if not 0.0 <= label_smoothing < 1.0:
            raise GenzooError(f"model.label_smoothing={label_smoothing} is not in [0, 1): the real target is "
                              "1 - label_smoothing, so use e.g. 0.1.")
        self.automatic_optimization = False  # two optimisers, stepped by hand in training_step
        self.objective = gan_loss(loss)
        if label_smoothing > 0 and not self.objective.probabilities:
            raise GenzooError(f"model.label_smoothing={label_smoothing} smooths a probability's target, and "
                              f"model.loss={loss} has none: set model.label_smoothing=0.")
        if arch not in ARCHITECTURES:
            raise GenzooError(f"model.arch={arch!r} is not a GAN architecture genzoo knows: use one of "
                              f"{', '.join(ARCHITECTURES)}.")
        self.penalty_weight = float(self.objective.gradient_penalty if gradient_penalty is None else gradient_penalty)
        self.r1 = float(r1)
        if self.penalty_weight < 0 or self.r1 < 0:
            raise GenzooError("model.gradient_penalty and model.r1 weigh penalties: use 0 (off) or a positive weight.")
        self.z_dim, self.d_steps, self.conditional = int(z_dim), int(d_steps), bool(conditional)
        self.label_smoothing, self.instance_noise = float(label_smoothing), float(instance_noise)
        self.betas = (float(beta1), float(beta2))
        classes = self.num_classes if self.conditional else 0
        g_net, d_net = ARCHITECTURES[arch]
        self.generator = build_network(g_net, generator, "model.generator", shape=self.shape, z_dim=self.z_dim,
                                       num_classes=classes)
        d_options = dict(discriminator or {})
        # Gulrajani et al.'s critic: the penalty, not spectral norm, keeps it Lipschitz.
        if self.penalty_weight > 0 and d_options.get("spectral_norm") is None:
            d_options["spectral_norm"] = False
        # Both penalties are norms of ∇_x D(x) for each image x, which only exist if D's output on x depends on x
        # alone: under batch norm the gradient of the batch's outputs mixes every image's (Gulrajani et al. 2017,
        # section 4; Mescheder et al. 2018 train R1 without normalisation). Layer norm keeps images apart.
        penalised = {name: weight for name, weight in (("gradient_penalty", self.penalty_weight), ("r1", self.r1))
                     if weight > 0}
        if penalised and arch == "dcgan" and d_options.get("norm") is None and not d_options.get("spectral_norm"):
            d_options["norm"] = "layer"
        self.discriminator = build_network(d_net, d_options, "model.discriminator", shape=self.shape,
                                           num_classes=classes)
        if penalised and self.discriminator.norm == "batch":
            raise GenzooError(f"model.{next(iter(penalised))} penalises each image's gradient, and batch norm makes "
                              "each image's output depend on the others: set model.discriminator.norm=layer (or none).")
        self.generator_ema = None
        if ema:
            # use_buffers: batch norm's running statistics are averaged like the weights, so the averaged G samples
            # (in inference mode) with statistics of the same era as its weights, not only of the last batches.
            self.generator_ema = AveragedModel(self.generator, avg_fn=ema_average(ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)  # no optimiser, no gradient, no DDP bucket
        # Steps taken by each player: G steps on every d_steps-th D step, across epochs and resumes.
        self.register_buffer("d_step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("g_step_count", torch.zeros((), dtype=torch.long))
        self.noise_rng: torch.Generator | None = None  # this training step's noise (see step_generator)

    # ---- the contract ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """(n, C, H, W) integers in 0 … levels-1 from the averaged generator (or G without EMA), batch norm in
        inference mode so a sample does not depend on the others drawn with it."""
        net = self.generator_ema.module if self.generator_ema is not None else self.generator
        if self.conditional and y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        z = torch.randn(n, self.z_dim, device=self.device)
        with evaluating(net):
            images = net(z, y if self.conditional else None)  # (n, C, H, W) in [-1, 1]
        return self.quantize(images)

    def quantize(self, images: Tensor) -> Tensor:
        """Floats in [-1, 1] to the nearest of ``levels`` integers: the inverse of ``scale``."""
        return ((images + 1.0) * ((self.levels - 1) / 2.0)).round().clamp(0, self.levels - 1).long()

    # ---- training ----------------------------------------------------------------------------------------------
    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.z_dim, device=self.device, generator=self.noise_rng)  # (n, z_dim)

    def noise_scale(self) -> float:
        """σ of the instance noise, annealed linearly from ``instance_noise`` to 0 over the run's epochs."""
        if self.instance_noise == 0.0 or self._trainer is None or not self.trainer.max_epochs:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - self.current_epoch / self.trainer.max_epochs)

    def discriminate(self, images: Tensor, y: Tensor | None) -> Tensor:
        """D's logits (B,) for images in [-1, 1], through the instance noise when it is on."""
        sigma = self.noise_scale()
        if sigma > 0:
            images = images + sigma * torch.randn(images.shape, device=images.device, generator=self.noise_rng)
        return self.discriminator(images, y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        y = y if self.conditional else None
        opt_g, opt_d = self.optimizers()
        self.noise_rng = self.step_generator()
        self.discriminator_step(self.scale(x), y, opt_d)
        if int(self.d_step_count) % self.d_steps == 0:
            self.generator_step(len(x), y, opt_g)

    def discriminator_step(self, real: Tensor, y: Tensor | None, opt) -> None:
        """One step of D on real images (B, C, H, W) in [-1, 1] and as many fakes drawn with the same labels."""
        with self.toggled_optimizer(opt):
            with torch.no_grad():  # D's step needs no graph through G
                fake = self.generator(self.noise(len(real)), y)
            if self.r1 > 0:
                real = real.detach().requires_grad_(True)  # R1 differentiates D's outputs on these
            real_out, fake_out = self.discriminate(real, y), self.discriminate(fake, y)
            loss = self.objective.discriminator(real_out, fake_out, 1.0 - self.label_smoothing)
            penalties = {}
            if self.penalty_weight > 0:
                def critic(images: Tensor) -> Tensor:
                    with frozen_power_iteration(self.discriminator):
                        return self.discriminate(images, y)

                penalties["gradient_penalty"] = gradient_penalty(critic, real, fake, self.penalty_weight,
                                                                 self.noise_rng)
            if self.r1 > 0:
                penalties["r1"] = r1_penalty(real_out, real, self.r1)
            loss = loss + sum(penalties.values())
            self.check_player_loss(loss, "discriminator", "train/loss_d")
            grad_norm = self.step(opt, loss, self.discriminator)
        self.d_step_count += 1
        self.log_dict({"train/loss_d": loss, **self.outputs_to_log(real_out.detach(), fake_out.detach()),
                       **{f"train/{k}": v for k, v in penalties.items()}, "train/grad_norm_d": grad_norm},
                      on_step=True, on_epoch=True, batch_size=len(real))

    def outputs_to_log(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """D's mean verdicts: probabilities where its outputs are logits, a critic's raw values (and for WGAN-GP
        the Wasserstein estimate) where they are not."""
        if self.objective.probabilities:
            return {"train/d_real": torch.sigmoid(real_out).mean(), "train/d_fake": torch.sigmoid(fake_out).mean()}
        logged = {"train/critic_real": real_out.mean(), "train/critic_fake": fake_out.mean()}
        if isinstance(self.objective, WassersteinGP):
            logged["train/wasserstein"] = real_out.mean() - fake_out.mean()
        return logged

    def generator_step(self, n: int, y: Tensor | None, opt) -> None:
        """One step of G on n fresh fakes; D's parameters are frozen by the toggle, not merely left unstepped."""
        with self.toggled_optimizer(opt):
            loss = self.objective.generator(self.discriminate(self.generator(self.noise(n), y), y))
            self.check_player_loss(loss, "generator", "train/loss_g")
            grad_norm = self.step(opt, loss, self.generator)
        self.g_step_count += 1
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self.log_dict({"train/loss_g": loss, "train/grad_norm_g": grad_norm}, on_step=True, on_epoch=True,
                      batch_size=n)

    def step(self, opt, loss: Tensor, net: torch.nn.Module) -> Tensor:
        """Backward and step of one player; returns the L2 norm of its gradient (averaged over ranks by DDP)."""
        opt.zero_grad()
        self.manual_backward(loss)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])
        opt.step()
        return grad_norm

    def check_player_loss(self, loss: Tensor, player: str, key: str) -> None:
        """Stop on a non-finite or diverged loss of one player (see ``GenerativeModel.check_loss``)."""
        step = int(self.d_step_count if player == "discriminator" else self.g_step_count) + 1  # the one failing
        hint = "model.label_smoothing=0.1 or " if self.objective.probabilities else ""
        self.check_loss(loss, key, f"{player} loss {key}", f"at {player} step {step} (epoch {self.current_epoch})",
                        f", try {hint}model.instance_noise=0.1,")

    def loss_limit(self, key: str) -> tuple[float, str] | None:
        return self.objective.limit

    # ---- validation: the Wasserstein estimate on held-out images ----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        # the same noise at every validation, apart from the training draws: the curve shows D and G, not the noise
        self.eval_rng = torch.Generator(device=self.device).manual_seed(0)

    on_test_epoch_start = on_validation_epoch_start

    def evaluation_metrics(self, x: Tensor, y: Tensor, stage: str) -> dict[str, Tensor]:
        """For WGAN-GP, D(x_i) - D(G(z_i)) per held-out image (B,): its mean is the Wasserstein estimate Ŵ."""
        if not isinstance(self.objective, WassersteinGP):
            return {}
        y = y if self.conditional else None
        z = torch.randn(len(x), self.z_dim, device=self.device, generator=self.eval_rng)
        return {"wasserstein": self.discriminator(self.scale(x), y) - self.discriminator(self.generator(z, y), y)}

    def configure_optimizers(self):
        def adam(net):
            return torch.optim.Adam(net.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

        return adam(self.generator), adam(self.discriminator)
