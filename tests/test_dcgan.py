"""DCGAN: the losses against their equations, the networks against the DCGAN guidelines, the alternating game
(who steps, how often, what each step may touch), the EMA generator, the sampling contract, the NaN stop, and the
installed ``genzoo-train model=dcgan`` end to end on one and two processes."""

from __future__ import annotations

import math
from importlib.resources import files

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from genzoo.data import DigitsDataModule
from genzoo.errors import GenzooError
from genzoo.models import DCGAN
from genzoo.models.dcgan import ema_average
from genzoo.models.gan_losses import Minimax, NonSaturating, gan_loss
from genzoo.nn.dcgan import Discriminator, Generator

SHAPES = [(c, s, s) for s in (8, 28, 32, 64) for c in (1, 3)]
SHAPE_IDS = [f"{'grey' if c == 1 else 'rgb'}{s}" for c, s, _ in SHAPES]


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def widths(width: int) -> dict:
    """Both networks' options at one width: small ones keep these tests fast."""
    return {"generator": {"width": width}, "discriminator": {"width": width}}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# ---- losses ------------------------------------------------------------------------------------------------------
REAL, FAKE = [2.0, -1.0, 0.0], [-3.0, 0.5]


def test_discriminator_loss_is_the_negated_game_with_optional_one_sided_smoothing():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    game = mean(math.log(sigmoid(v)) for v in REAL) + mean(math.log(1 - sigmoid(v)) for v in FAKE)
    for loss in (Minimax(), NonSaturating()):
        assert loss.discriminator(real, fake).item() == pytest.approx(-game, rel=1e-6)
    t = 0.9
    smoothed = (-mean(t * math.log(sigmoid(v)) + (1 - t) * math.log(1 - sigmoid(v)) for v in REAL)
                - mean(math.log(1 - sigmoid(v)) for v in FAKE))
    assert NonSaturating().discriminator(real, fake, real_target=t).item() == pytest.approx(smoothed, rel=1e-6)


def test_generator_losses_are_their_equations():
    fake = torch.tensor(FAKE)
    assert Minimax().generator(fake).item() == pytest.approx(mean(math.log(1 - sigmoid(v)) for v in FAKE), rel=1e-6)
    assert NonSaturating().generator(fake).item() == pytest.approx(-mean(math.log(sigmoid(v)) for v in FAKE), rel=1e-6)


def test_minimax_gradient_vanishes_when_d_rejects_the_fakes_and_non_saturating_does_not():
    # D(G(z)) = σ(-20) ≈ 2e-9: D wins, as early in training
    grads = {}
    for name, loss in (("minimax", Minimax()), ("non_saturating", NonSaturating())):
        logits = torch.full((4,), -20.0, requires_grad=True)
        loss.generator(logits).backward()
        grads[name] = logits.grad
    assert grads["minimax"].abs().max() < 1e-8  # ∂/∂l = -σ(l)/B
    assert torch.allclose(grads["non_saturating"], torch.full((4,), -0.25), atol=1e-6)  # -(1 - σ(l))/B → -1/B


def test_losses_stay_finite_where_the_sigmoid_saturates():
    extreme = torch.tensor([-200.0, 200.0])
    for loss in (Minimax(), NonSaturating()):
        assert torch.isfinite(loss.discriminator(extreme, extreme)) and torch.isfinite(loss.generator(extreme))
    assert NonSaturating().generator(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(GenzooError, match="model.loss='nope'.*minimax, non_saturating, hinge, wgan_gp"):
        gan_loss("nope")


# ---- networks ----------------------------------------------------------------------------------------------------
def layer_types(net: nn.Module) -> set[type]:
    return {type(m) for m in net.modules()}


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_networks_follow_the_dcgan_guidelines_and_round_trip_the_shape(shape):
    g, d = Generator(shape, z_dim=16, width=8), Discriminator(shape, width=8)
    for net in (g, d):
        assert not any("Pool" in t.__name__ for t in layer_types(net)), "no pooling layers"
        assert nn.Linear not in layer_types(net), "no fully connected layers"
        assert nn.BatchNorm2d in layer_types(net)
    assert list(g.net)[-1].__class__ is nn.Tanh and nn.ReLU in layer_types(g) and nn.LeakyReLU not in layer_types(g)
    assert nn.Conv2d not in layer_types(g)
    assert all(m.stride == (2, 2) for m in list(g.net)[1:] if isinstance(m, nn.ConvTranspose2d)), "fractional strides"
    assert nn.LeakyReLU in layer_types(d) and nn.ReLU not in layer_types(d)
    assert all(m.stride == (2, 2) for m in d.features if isinstance(m, nn.Conv2d)), "strided convolutions"
    # no batch norm on G's output layer nor on D's input layer
    assert not isinstance(list(g.net)[-2], nn.BatchNorm2d) and not isinstance(d.features[1], nn.BatchNorm2d)

    images = g(torch.randn(5, 16))
    assert images.shape == (5, *shape) and images.abs().max() <= 1
    assert d(images).shape == (5,)


def test_unsupported_shapes_name_the_supported_sizes():
    for shape in [(1, 16, 16), (3, 28, 32), (1, 7, 7)]:
        with pytest.raises(GenzooError, match="8×8, 28×28, 32×32 and 64×64"):
            DCGAN(shape=shape, levels=2)


def test_weights_start_from_the_dcgan_normal():
    g, d = Generator((3, 32, 32)), Discriminator((3, 32, 32))
    weights = torch.cat([m.weight.flatten() for net in (g, d) for m in net.modules()
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)


def test_conditional_networks_use_the_label():
    torch.manual_seed(0)
    g, d = Generator((1, 8, 8), z_dim=8, width=8, num_classes=10).eval(), Discriminator((1, 8, 8), 8, 10).eval()
    z, x = torch.randn(1, 8).repeat(2, 1), torch.rand(1, 1, 8, 8).repeat(2, 1, 1, 1)
    labels = torch.tensor([3, 7])
    images = g(z, labels)
    assert not torch.allclose(images[0], images[1])
    logits = d(x, labels)
    assert not torch.allclose(logits[0], logits[1])
    model = DCGAN(shape=(1, 8, 8), levels=17, num_classes=10, conditional=True, **widths(8))
    assert model.sample(4, torch.tensor([0, 1, 2, 3])).shape == (4, 1, 8, 8) and model.sample(3).shape == (3, 1, 8, 8)
    with pytest.raises(GenzooError, match="conditional=true needs labelled data"):
        DCGAN(shape=(1, 8, 8), levels=17, num_classes=0, conditional=True)


def test_model_config_builds_a_gan_without_likelihood():
    cfg = OmegaConf.load(files("genzoo.conf") / "model" / "dcgan.yaml")
    assert cfg.monitor == "val/fid" and cfg.loss == "non_saturating" and cfg.lr == 2e-4 and cfg.beta1 == 0.5
    model = instantiate(cfg, shape=(3, 64, 64), levels=256, num_classes=0, **widths(8))
    assert isinstance(model, DCGAN) and model.likelihood is None
    assert model.sample(2).shape == (2, 3, 64, 64)


# ---- sampling ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 17), ((3, 32, 32), 256), ((1, 28, 28), 2)])
def test_sample_is_integer_in_range_and_seeded(shape, levels):
    model = DCGAN(shape=shape, levels=levels, **widths(8))
    torch.manual_seed(3)
    a = model.sample(6)
    torch.manual_seed(3)
    b = model.sample(6)
    assert a.shape == (6, *shape) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() <= levels - 1
    assert torch.equal(a, b)
    assert model.training, "sampling leaves the module in the mode it found it"


def test_quantize_inverts_scale_and_maps_the_tanh_range_onto_every_level():
    model = DCGAN(shape=(1, 8, 8), levels=17, **widths(8))
    x = torch.arange(17)
    assert torch.equal(model.quantize(model.scale(x)), x)
    assert model.quantize(torch.tensor([-1.0, 1.0, -5.0, 5.0])).tolist() == [0, 16, 0, 16]


# ---- the game ----------------------------------------------------------------------------------------------------
def digits() -> DigitsDataModule:
    return DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10, batch_size=64)


def quiet_trainer(tmp_path, **kw) -> pl.Trainer:
    options = dict(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                   default_root_dir=tmp_path)
    return pl.Trainer(**{**options, **kw})


class RecordedDCGAN(DCGAN):
    """Snapshots both networks' parameters and gradients around every optimiser step."""

    def configure_optimizers(self):
        opt_g, opt_d = super().configure_optimizers()
        self.events = []
        for player, opt in (("G", opt_g), ("D", opt_d)):
            opt.register_step_pre_hook(lambda *_, p=player: self.record(p, "pre"))
            opt.register_step_post_hook(lambda *_, p=player: self.record(p, "post"))
        return opt_g, opt_d

    def record(self, player: str, phase: str) -> None:
        def snap(net):
            return ([p.detach().clone() for p in net.parameters()],
                    [None if p.grad is None else p.grad.clone() for p in net.parameters()])

        self.events.append((player, phase, {"G": snap(self.generator), "D": snap(self.discriminator)}))


def same(a, b) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b, strict=True))


def test_k_discriminator_steps_per_generator_step_each_touching_only_its_own_network(tmp_path):
    pl.seed_everything(0, verbose=False)
    model = RecordedDCGAN(shape=(1, 8, 8), levels=17, num_classes=10, **widths(16), d_steps=3)
    trainer = quiet_trainer(tmp_path, limit_train_batches=7)
    trainer.fit(model, datamodule=digits())

    steps = [player for player, phase, _ in model.events if phase == "pre"]
    assert steps == ["D", "D", "D", "G", "D", "D", "D", "G", "D"]  # a G step after every third batch's D step
    assert (int(model.d_step_count), int(model.g_step_count)) == (7, 2)
    assert trainer.global_step == 9, "Lightning's global_step counts both players' steps"
    assert int(model.generator_ema.n_averaged) == 2

    previous = None
    for (player, _, before), (_, _, after) in zip(model.events[::2], model.events[1::2], strict=True):
        other = "G" if player == "D" else "D"
        assert same(before[other][0], after[other][0]), f"a {player} step changed the other network"
        assert not same(before[player][0], after[player][0]), f"a {player} step left its own network unchanged"
        if previous is not None:  # the backward between two steps put no gradient into the other network
            assert same(previous[other][1], before[other][1]), f"{player}'s backward reached {other}'s gradients"
        previous = after

    metrics = trainer.callback_metrics
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"):
        assert math.isfinite(metrics[f"train/{key}"]), key
    assert 0 < metrics["train/d_real"] < 1 and 0 < metrics["train/d_fake"] < 1


def test_ema_generator_averages_without_gradients_and_is_what_samples_come_from(tmp_path):
    pl.seed_everything(0, verbose=False)
    model = DCGAN(shape=(1, 8, 8), levels=17, **widths(16))
    trainer = quiet_trainer(tmp_path, limit_train_batches=3)
    trainer.fit(model, datamodule=digits())
    optimised = {id(p) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]}
    ema = list(model.generator_ema.parameters())
    assert all(not p.requires_grad and id(p) not in optimised for p in ema)
    assert not all(torch.equal(a, b) for a, b in zip(ema, model.generator.parameters(), strict=True))

    torch.manual_seed(1)
    before = model.sample(8)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.zero_()
    torch.manual_seed(1)
    assert torch.equal(model.sample(8), before), "samples come from the averaged generator"


def test_ema_average_warms_up_then_holds_its_decay():
    average = ema_average(0.999)
    zero, one = torch.zeros(1), torch.ones(1)
    assert average(zero, one, torch.tensor(0)).item() == pytest.approx(0.9)  # d = (1 + 0)/(10 + 0)
    assert average(zero, one, torch.tensor(10**6)).item() == pytest.approx(0.001, rel=1e-4)  # d = 0.999


@pytest.mark.parametrize("player,key", [("discriminator", "train/loss_d"), ("generator", "train/loss_g")])
def test_a_nan_loss_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path, player, key):
    pl.seed_everything(0, verbose=False)
    model = DCGAN(shape=(1, 8, 8), levels=17, **widths(16))
    honest = getattr(model.objective, player)

    def poisoned(*args, **kwargs):  # finite in epoch 0, NaN from epoch 1
        loss = honest(*args, **kwargs)
        return loss * float("nan") if model.current_epoch >= 1 else loss

    setattr(model.objective, player, poisoned)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor=None, save_last=True)
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=2, enable_checkpointing=True,
                            callbacks=[ckpt])
    with pytest.raises(GenzooError) as error:
        trainer.fit(model, datamodule=digits())
    message = str(error.value)
    assert f"The {player} loss {key} became nan at {player} step 3 (epoch 1)" in message, message
    assert "\n" not in message and message.endswith(".")
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the NaN never reached the weights"
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_experiment_digits_dcgan_selects_the_gan_on_the_digits():
    with initialize_config_module(config_module="genzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=digits_dcgan"])
    assert cfg.model._target_ == "genzoo.models.DCGAN" and cfg.data._target_ == "genzoo.data.DigitsDataModule"
    assert cfg.model.monitor == "val/fid" and cfg.trainer.max_epochs >= 50
    model = instantiate(cfg.model)
    assert model.shape == (1, 8, 8) and model.levels == 17


# ---- the installed entry point -----------------------------------------------------------------------------------
# What D's outputs mean decides what is logged: probabilities for the logistic game, a critic's raw values and its
# Wasserstein estimate for WGAN-GP (here conditional, so genzoo-sample draws one class from the run).
SMOKE = {
    "non_saturating": ([], ["d_real", "d_fake"]),
    "wgan_gp": (["model.loss=wgan_gp", "model.conditional=true", "callbacks.fidelity=null"],
                ["critic_real", "critic_fake", "wasserstein", "gradient_penalty"]),
}


@pytest.mark.parametrize("loss", list(SMOKE))
def test_genzoo_train_model_dcgan_smoke_writes_last_checkpoint_and_samples(cli, tmp_path, loss):
    overrides, keys = SMOKE[loss]
    run = cli.train("model=dcgan", "debug=smoke", "logger=csv", *overrides, workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    run_dir = run.run_dir()
    # without the fidelity callback there is no val/fid: the run keeps its last epoch (genzoo.run.selection)
    monitor = None if "callbacks.fidelity=null" in overrides else "val/fid"
    assert OmegaConf.load(run_dir / "config.yaml").model.monitor == monitor
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (int(state["state_dict"]["d_step_count"]), int(state["state_dict"]["g_step_count"])) == (2, 2)
    assert any(k.startswith("generator_ema.") for k in state["state_dict"])
    (png,) = (run_dir / "samples").glob("*.png")
    with Image.open(png) as image:
        image.verify()
    header = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("loss_d", "loss_g", "grad_norm_d", "grad_norm_g", *keys):
        assert f"train/{key}_step" in header and f"train/{key}_epoch" in header, key
    assert not {"train/d_real_step", "train/wasserstein_step"} <= set(header), "probabilities or a critic, not both"
    if loss == "wgan_gp":
        assert "val/wasserstein" in header
        drawn = cli.script("genzoo-sample", f"ckpt={run_dir}", "y=3", "n=5", workdir=tmp_path)
        assert drawn.returncode == 0, drawn.tail()
        (npz,) = (tmp_path / "outputs" / "samples").glob("*/samples.npz")
        with np.load(npz) as saved:
            assert saved["samples"].shape == (5, 1, 8, 8) and int(saved["y"]) == 3


def test_genzoo_train_model_dcgan_under_ddp_cpu_two_processes(cli, tmp_path):
    # conditional, and k=2 so one of the two batches steps only D: every parameter goes unused in some step
    run = cli.train("model=dcgan", "debug=smoke", "trainer=ddp_cpu", "model.conditional=true", "model.d_steps=2",
                    "logger=none", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output and "GLOBAL_RANK: 1" in run.output
    state = torch.load(run.run_dir() / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (int(state["state_dict"]["d_step_count"]), int(state["state_dict"]["g_step_count"])) == (2, 1)
    assert list((run.run_dir() / "samples").glob("*.png"))


def test_genzoo_train_stops_on_a_nan_loss_with_one_sentence(cli, tmp_path):
    run = cli.train("model=dcgan", "debug=smoke", "logger=none", "model.lr=1e30", workdir=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    lines = run.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Error executing job with overrides"))
    message, after = lines[start + 1], lines[start + 2:]
    assert message.startswith("The ") and " loss train/loss_" in message and " step " in message, run.tail()
    assert "lower model.lr" in message and message.endswith(".")
    assert [line for line in after if line.strip()] == ["Set the environment variable HYDRA_FULL_ERROR=1 for a "
                                                        "complete stack trace."]
