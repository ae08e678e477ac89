"""Network hyper-parameters are written once: as the network's keyword arguments, set from a plain node of the
model's YAML (``model.net``; the DCGAN's ``model.generator`` and ``model.discriminator``). A name the network
does not take is a user's mistake with one sentence naming the key and the accepted options."""

from __future__ import annotations

import importlib.resources
import inspect
import io

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.models import PixelCNN
from genzoo.nn.autoencoder import encoder_decoder
from genzoo.nn.dcgan import Discriminator, Generator
from genzoo.nn.diagonal_bilstm import DiagonalBiLSTMNet
from genzoo.nn.pixelcnn import GatedPixelCNNNet, PixelCNNNet
from genzoo.nn.pixelcnn_pp import PixelCNNPPNet
from genzoo.nn.row_lstm import RowLSTMNet
from genzoo.nn.vq import vq_encoder_decoder

# model= choice → {config node: what the model builds from it}. A new model adds its line here.
NETWORKS = {
    "pixelcnn": {"net": PixelCNNNet},
    "gated_pixelcnn": {"net": GatedPixelCNNNet},
    "pixelcnn_pp": {"net": PixelCNNPPNet},
    "row_lstm": {"net": RowLSTMNet},
    "diagonal_bilstm": {"net": DiagonalBiLSTMNet},
    "vae": {"net": encoder_decoder},
    "autoencoder": {"net": encoder_decoder},
    "dcgan": {"generator": Generator, "discriminator": Discriminator},
    "vqvae": {"net": vq_encoder_decoder},
}
# Models whose nested node is another genzoo model (its own networks checked as that model), not a network.
MODEL_OF_MODELS = {"vqvae_prior"}
NODES = [(name, node) for name, nodes in NETWORKS.items() for node in nodes]
MODEL_YAMLS = sorted(p.name[: -len(".yaml")] for p in (importlib.resources.files("genzoo.conf") / "model").iterdir()
                     if p.name.endswith(".yaml") and p.name[: -len(".yaml")] not in MODEL_OF_MODELS)


def composed(name: str, *overrides: str):
    """The train config with ``model=name`` on the default data (the 8×8 digits, which every model takes)."""
    with initialize_config_module("genzoo.conf", version_base="1.3"):
        return compose("train", overrides=[f"model={name}", *overrides])


def keyword_arguments(build_fn) -> set[str]:
    return {p.name for p in inspect.signature(build_fn).parameters.values() if p.default is not inspect.Parameter.empty}


def test_every_model_yaml_names_its_networks_here():
    assert sorted(NETWORKS) == MODEL_YAMLS


@pytest.mark.parametrize("name", MODEL_YAMLS)
def test_the_yaml_network_nodes_are_keyword_arguments_of_the_networks_and_build_the_model(name):
    cfg = composed(name)
    nodes = {key for key, value in cfg.model.items() if OmegaConf.is_dict(value)}
    assert nodes == set(NETWORKS[name]), f"{name}: nested nodes of the model config"
    for node, build_fn in NETWORKS[name].items():
        assert "_target_" not in cfg.model[node], "the model names its network: no module built by Hydra alone"
        options = set(cfg.model[node])
        assert options <= keyword_arguments(build_fn), f"model.{node}: {options - keyword_arguments(build_fn)}"
    model = build(cfg.model, "model")  # a key the model fills in itself (levels, z_dim …) would fail here
    for node in NETWORKS[name]:
        assert model.hparams[node] == OmegaConf.to_container(cfg.model[node])


@pytest.mark.parametrize("name, node", NODES)
def test_an_unknown_network_option_names_its_key_and_the_accepted_ones(name, node):
    cfg = composed(name, f"+model.{node}.chanels=8")
    with pytest.raises(GenzooError) as error:
        build(cfg.model, "model")
    message = str(error.value)
    start = f"model.{node}.chanels is not an option of {NETWORKS[name][node].__name__}: use one of "
    assert message.startswith(start) and message.endswith(".") and "\n" not in message, message
    accepted = message[len(start):-1].split(", ")
    assert set(cfg.model[node]) - {"chanels"} <= set(accepted), message


def test_the_message_lists_the_networks_options_in_signature_order_and_not_what_the_model_fills_in():
    with pytest.raises(GenzooError) as error:
        PixelCNN(shape=(1, 3, 3), levels=2, net={"chanels": 8, "levels": 3})
    assert str(error.value) == (
        "model.net.chanels, model.net.levels are not options of PixelCNNNet: use one of channels, blocks, "
        "kernel_size, first_kernel_size, head_channels, dropout, bottleneck."
    )


@pytest.mark.parametrize("name", MODEL_YAMLS)
def test_hyperparameters_stay_plain_containers_when_hydra_hands_over_omegaconf_nodes(name):
    # hydra.utils.instantiate without _convert_ passes the net node as a DictConfig; a checkpoint must still load
    # with weights_only=True, which refuses OmegaConf objects.
    model = instantiate(composed(name).model)
    assert all(type(model.hparams[node]) is dict for node in NETWORKS[name])
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams)}, buffer)  # what Lightning writes into a checkpoint
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hyper_parameters"] == dict(model.hparams)
