"""GAN objectives beyond the logistic game: the penalties against their closed forms on a linear critic and through
gradcheck, hinge and Wasserstein losses on known outputs, spectral normalisation against the SVD, the WGAN-GP
critic's normalisation, SNGAN's ResNets, the conditional networks, and what a D step logs for each objective."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from genzoo.data import DigitsDataModule
from genzoo.errors import GenzooError
from genzoo.models import DCGAN
from genzoo.models.gan_losses import Hinge, WassersteinGP, gradient_penalty, r1_penalty
from genzoo.nn.dcgan import Discriminator
from genzoo.nn.gan_layers import ConditionalBatchNorm2d, frozen_power_iteration, power_iterations
from genzoo.nn.sngan import ResNetDiscriminator, ResNetGenerator

REAL, FAKE = [2.0, -1.0, 0.0], [-3.0, 0.5]


def linear_critic(w: torch.Tensor, b: float):
    return lambda x: x.flatten(1) @ w + b  # D(x) = w·x + b: ∇_x D = w everywhere


# ---- penalties ---------------------------------------------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared():
    torch.manual_seed(0)
    w = torch.randn(12, dtype=torch.float64)
    real, fake = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.randn(5, 3, 2, 2, dtype=torch.float64)
    penalty = gradient_penalty(linear_critic(w, 0.7), real, fake, weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (w.norm().item() - 1.0) ** 2, rel=1e-12)
    unit = w / w.norm()
    assert gradient_penalty(linear_critic(unit, 0.7), real, fake, weight=10.0).item() == pytest.approx(0, abs=1e-20)


def test_r1_of_a_linear_critic_is_half_gamma_times_the_squared_norm():
    torch.manual_seed(0)
    w = torch.randn(12, dtype=torch.float64)
    real = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    penalty = r1_penalty(linear_critic(w, -0.3)(real), real, gamma=4.0)
    assert penalty.item() == pytest.approx(4.0 / 2 * w.square().sum().item(), rel=1e-12)


def tiny_critic(w1: torch.Tensor, w2: torch.Tensor):
    """A non-linear critic, so the penalties' second derivatives are not zero: D(x) = w2·tanh(W1 x)."""
    return lambda x: torch.tanh(x.flatten(1) @ w1) @ w2


def test_the_penalties_double_backward_passes_gradcheck():
    torch.manual_seed(0)
    w1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(2, 1, 2, 2, dtype=torch.float64), torch.randn(2, 1, 2, 2, dtype=torch.float64)

    def gp(a, b):  # the same interpolates at every call: the generator is seeded afresh
        return gradient_penalty(tiny_critic(a, b), real, fake, 10.0, torch.Generator().manual_seed(0))

    def r1(a, b, x):
        return r1_penalty(tiny_critic(a, b)(x), x, 2.0)

    assert torch.autograd.gradcheck(gp, (w1, w2))
    assert torch.autograd.gradcheck(r1, (w1, w2, real.clone().requires_grad_(True)))


# ---- losses on known outputs -------------------------------------------------------------------------------------
def test_hinge_losses_are_their_equations():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    # E[max(0, 1 - r)] = (0 + 2 + 1)/3, E[max(0, 1 + f)] = (0 + 1.5)/2
    assert Hinge().discriminator(real, fake).item() == pytest.approx(1.0 + 0.75)
    assert Hinge().generator(fake).item() == pytest.approx(1.25)


def test_wasserstein_losses_are_their_equations():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    assert WassersteinGP().discriminator(real, fake).item() == pytest.approx(-1.25 - 1.0 / 3)  # E[f] - E[r] = -Ŵ
    assert WassersteinGP().generator(fake).item() == pytest.approx(1.25)
    assert WassersteinGP.gradient_penalty == 10.0 and not WassersteinGP.probabilities


# ---- spectral norm -----------------------------------------------------------------------------------------------
def normalised_weights(net: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every spectrally normalised weight as the forward uses it, read as a matrix (out, in·k·k)."""
    with torch.no_grad(), frozen_power_iteration(net):
        return [(name, m.weight.flatten(1)) for name, m in net.named_modules() if hasattr(m, "parametrizations")]


@pytest.mark.parametrize("network", [
    lambda: Discriminator((1, 8, 8), width=8, num_classes=10, spectral_norm=True),
    lambda: ResNetDiscriminator((1, 8, 8), width=8, num_classes=10),
], ids=["dcgan", "resnet"])
def test_spectral_norm_gives_every_weight_a_largest_singular_value_of_one(network):
    torch.manual_seed(0)
    net = network()
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    for _ in range(50):  # one power-iteration step per training-mode forward
        net(x, y)
    weights = normalised_weights(net)
    assert len(weights) >= 4 and any("embed" in name for name, _ in weights)
    for name, w in weights:
        assert torch.linalg.svdvals(w)[0].item() == pytest.approx(1.0, abs=2e-3), name
    buffers = dict(net.named_buffers())  # u, v travel with the state dict and DDP's buffer broadcast
    assert any(k.endswith("_u") for k in buffers) and any(k.endswith("_v") for k in buffers)


def test_a_frozen_power_iteration_forward_leaves_u_and_v_alone():
    net = Discriminator((1, 8, 8), width=8, spectral_norm=True)
    x = torch.randn(2, 1, 8, 8)
    before = {k: v.clone() for k, v in net.named_buffers()}
    with frozen_power_iteration(net):
        net(x)
    assert all(torch.equal(v, before[k]) for k, v in net.named_buffers())
    assert all(p.training for p in power_iterations(net)), "the parametrisations' mode is put back"
    net(x)
    assert not all(torch.equal(v, before[k]) for k, v in net.named_buffers())


# ---- the critic's normalisation ----------------------------------------------------------------------------------
def norms_in(net: nn.Module) -> set[type]:
    return {type(m) for m in net.modules()} & {nn.BatchNorm2d, nn.GroupNorm}


def test_the_wgan_gp_critic_has_layer_norm_and_no_batch_norm():
    model = DCGAN(shape=(1, 8, 8), levels=17, loss="wgan_gp", generator={"width": 8}, discriminator={"width": 8})
    assert model.penalty_weight == 10.0
    assert norms_in(model.discriminator) == {nn.GroupNorm} and not power_iterations(model.discriminator)
    resnet = DCGAN(shape=(1, 8, 8), levels=17, loss="wgan_gp", arch="resnet", generator={"width": 8},
                   discriminator={"width": 8})
    assert norms_in(resnet.discriminator) == set() and not power_iterations(resnet.discriminator)
    assert norms_in(DCGAN(shape=(1, 8, 8), levels=17).discriminator) == {nn.BatchNorm2d}, "DCGAN keeps batch norm"


def test_r1_penalises_each_image_alone_so_its_discriminator_has_no_batch_norm():
    torch.manual_seed(0)
    model = DCGAN(shape=(1, 8, 8), levels=17, r1=2.0, generator={"width": 8}, discriminator={"width": 8})
    assert norms_in(model.discriminator) == {nn.GroupNorm}
    real = torch.rand(6, 1, 8, 8) * 2 - 1

    def r1_of(images: torch.Tensor) -> torch.Tensor:
        images = images.detach().requires_grad_(True)
        return r1_penalty(model.discriminator(images), images, 2.0)

    # E over the batch of γ/2‖∇D(x)‖²: the penalty of the batch is the mean of each image's own
    alone = torch.stack([r1_of(real[i:i + 1]) for i in range(len(real))])
    torch.testing.assert_close(r1_of(real), alone.mean())

    # the reason batch norm is refused: under it, the gradient at an image changes with the rest of the batch
    def first_gradient(net: nn.Module, others: torch.Tensor) -> torch.Tensor:
        images = torch.cat([real[:1], others]).requires_grad_(True)
        return torch.autograd.grad(net(images).sum(), images)[0][0]

    others, new_others = real[1:], torch.rand(5, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(first_gradient(model.discriminator, others),
                               first_gradient(model.discriminator, new_others))
    batch_norm = Discriminator((1, 8, 8), width=8, norm="batch")
    assert not torch.allclose(first_gradient(batch_norm, others), first_gradient(batch_norm, new_others))


@pytest.mark.parametrize("kwargs,match", [
    ({"loss": "wgan_gp", "discriminator": {"norm": "batch"}}, "gradient_penalty penalises each image's gradient"),
    ({"r1": 1.0, "discriminator": {"norm": "batch"}}, "model.r1 penalises each image's gradient, and batch norm"),
    ({"loss": "hinge", "label_smoothing": 0.1}, "model.loss=hinge has none: set model.label_smoothing=0"),
    ({"arch": "resnet", "shape": (1, 16, 16)}, r"ResNet networks \(model.arch=resnet\) support 8×8, 28×28, 32×32"),
    ({"conditional": True, "num_classes": 0}, "needs labelled data"),
])
def test_a_bad_gan_choice_is_refused_with_one_sentence(kwargs, match):
    options = {"shape": (1, 8, 8), "levels": 17, "generator": {"width": 8}, "discriminator": {"width": 8}, **kwargs}
    with pytest.raises(GenzooError, match=match):
        DCGAN(**options)


# ---- SNGAN's ResNets and conditioning ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,up,down", [((3, 32, 32), 3, 2), ((1, 8, 8), 2, 1)], ids=["cifar", "digits"])
def test_resnet_follows_sngan_at_32_and_the_same_rules_at_8(shape, up, down):
    g, d = ResNetGenerator(shape, z_dim=16, width=8), ResNetDiscriminator(shape, width=8)
    assert len(g.blocks) == up and sum(b.down for b in d.blocks) == down and len(d.blocks) == down + 2
    images = g(torch.randn(3, 16))
    assert images.shape == (3, *shape) and images.abs().max() <= 1 and d(images).shape == (3,)


def test_conditional_batch_norm_scales_and_shifts_by_class():
    cbn = ConditionalBatchNorm2d(2, num_classes=3)
    with torch.no_grad():
        cbn.gamma.weight[1] = torch.tensor([2.0, 3.0])
        cbn.beta.weight[1] = torch.tensor([-1.0, 1.0])
    h = torch.randn(4, 2, 3, 3)
    plain = cbn.bn(h)
    out = cbn(h, torch.tensor([0, 1, 1, 0]))
    torch.testing.assert_close(out[[0, 3]], plain[[0, 3]])  # γ = 1, β = 0 at the start
    torch.testing.assert_close(out[1], plain[1] * torch.tensor([2.0, 3.0])[:, None, None]
                               + torch.tensor([-1.0, 1.0])[:, None, None])


def test_conditional_resnet_samples_change_with_y_and_the_projection_uses_the_label():
    torch.manual_seed(0)
    model = DCGAN(shape=(1, 8, 8), levels=17, num_classes=10, conditional=True, arch="resnet", loss="hinge",
                  generator={"width": 8}, discriminator={"width": 8})
    with torch.no_grad():  # give the classes distinct scales and embeddings, as training would
        for m in model.generator_ema.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gamma.weight.normal_(1.0, 0.5)
    torch.manual_seed(1)
    threes = model.sample(4, torch.full((4,), 3))
    torch.manual_seed(1)
    sevens = model.sample(4, torch.full((4,), 7))
    assert threes.shape == (4, 1, 8, 8) and not torch.equal(threes, sevens)

    d = model.discriminator.eval()
    x = torch.randn(1, 1, 8, 8).repeat(2, 1, 1, 1)
    with torch.no_grad():
        out = d(x, torch.tensor([3, 7]))
        phi = torch.relu(d.blocks(x[:1])).sum((2, 3))[0]
        projections = d.embed.weight[[3, 7]] @ phi  # the projection term ⟨e_y, φ(x)⟩ of each label
    torch.testing.assert_close(out[0] - out[1], projections[0] - projections[1])


# ---- what a D step does and logs ---------------------------------------------------------------------------------
def one_discriminator_step(**kwargs) -> tuple[DCGAN, dict]:
    """One D step (d_steps=2 keeps G out of it) on the first digits batch, seed 0."""
    pl.seed_everything(0, verbose=False)
    model = DCGAN(shape=(1, 8, 8), levels=17, num_classes=10, d_steps=2, generator={"width": 8}, **kwargs)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         limit_train_batches=1)
    trainer.fit(model, datamodule=DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10, batch_size=16))
    return model, {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_step")}


def test_a_gradient_penalty_pass_does_not_advance_spectral_norm():
    sn = {"width": 8, "spectral_norm": True}
    plain, _ = one_discriminator_step(discriminator=sn, loss="hinge")
    penalised, logged = one_discriminator_step(discriminator=sn, loss="hinge", gradient_penalty=10.0)
    assert logged["train/gradient_penalty_step"] > 0
    u = {k: v for k, v in plain.discriminator.named_buffers() if k.endswith("_u")}
    assert u and all(torch.equal(v, dict(penalised.discriminator.named_buffers())[k]) for k, v in u.items())


def test_each_objective_logs_what_its_outputs_mean():
    _, logistic = one_discriminator_step(discriminator={"width": 8}, r1=1.0)
    assert 0 < logistic["train/d_real_step"] < 1 and logistic["train/r1_step"] > 0
    assert not any("critic" in k or "wasserstein" in k for k in logistic)
    _, wgan = one_discriminator_step(discriminator={"width": 8}, loss="wgan_gp")
    assert not any("d_real" in k or "d_fake" in k for k in wgan)
    assert wgan["train/wasserstein_step"] == pytest.approx(wgan["train/critic_real_step"]
                                                           - wgan["train/critic_fake_step"], abs=1e-6)
    # L_D = -Ŵ + GP
    assert wgan["train/loss_d_step"] == pytest.approx(-wgan["train/wasserstein_step"]
                                                      + wgan["train/gradient_penalty_step"], rel=1e-5)
