"""Every named experiment (``experiment=NAME``) composes into a config genzoo can build, states its published or
reached numbers in the agreed form, and every ``digits_*`` one runs end to end with ``debug=smoke``."""

from __future__ import annotations

import importlib.resources
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from genzoo.evaluation.protocol import FIELDS, is_fidelity_metric


EXPERIMENTS = importlib.resources.files("genzoo.conf") / "experiment"
NAMES = sorted(p.name[: -len(".yaml")] for p in EXPERIMENTS.iterdir() if p.name.endswith(".yaml"))
# A second stage needs its first stage's run folder: tests/test_vqvae.py runs it on one it trains.
SECOND_STAGES = {"digits_vqvae_prior"}
DIGITS = [n for n in NAMES if n.startswith("digits_") and n not in SECOND_STAGES]
NUMBER_KEYS = {"metric", "value", "units", "data", "source"}  # and a protocol for a fidelity number


def composed(name: str):
    with initialize_config_module("genzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.cwd} in the paths
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True)


def test_the_experiments_folder_ships_the_digits_baselines():
    assert {"digits_pixelcnn", "digits_gated_pixelcnn", "digits_vae", "digits_autoencoder", "digits_dcgan"} <= set(
        DIGITS)


@pytest.mark.parametrize("name", NAMES)
def test_experiment_composes_into_a_config_naming_real_classes(name):
    assert (EXPERIMENTS / f"{name}.yaml").read_text().startswith("# @package _global_"), name
    cfg = composed(name)
    for group in ("model", "data", "trainer"):
        assert get_class(cfg[group]["_target_"]), f"{name}: {group}"
    model = cfg["model"]
    assert (model["shape"], model["levels"]) == (cfg["data"]["shape"], cfg["data"]["levels"])
    assert model["mode"] in ("min", "max")


@pytest.mark.parametrize("name", NAMES)
def test_published_and_reached_numbers_carry_metric_units_data_source_and_for_fidelity_a_protocol(name):
    cfg = composed(name)
    for kind in ("published", "reached"):
        for entry in cfg.get(kind) or []:
            assert set(entry) - {"protocol"} == NUMBER_KEYS, f"{name}: {kind} {entry}"
            assert isinstance(entry["value"], (int, float)) and math.isfinite(entry["value"])
            assert "/" in entry["metric"], f"{name}: {entry['metric']} is not a logged metric key"
            assert all(isinstance(entry[k], str) and entry[k].strip() for k in ("units", "data", "source"))
            assert_protocol_stated(entry, f"{name}: {kind} {entry['metric']}")


def assert_protocol_stated(entry: dict, where: str) -> None:
    """FID, IS, KID … differ by several points between protocols: a fidelity number names its extractor, its number
    of generated images, its reference split and that split's size (a number, or words where the source has none)."""
    if not is_fidelity_metric(entry["metric"]):
        assert "protocol" not in entry, f"{where} is no fidelity metric"
        return
    protocol = entry.get("protocol")
    assert isinstance(protocol, dict) and set(FIELDS) <= set(protocol), f"{where} states no protocol: {entry}"
    for field in FIELDS:
        value = protocol[field]
        assert (isinstance(value, int) and value > 0) or (isinstance(value, str) and value.strip()), (where, field)


def test_a_published_fid_without_its_protocol_is_refused():
    number = {"metric": "test/fid", "value": 30.0, "units": "FID", "data": "CIFAR-10", "source": "a paper"}
    with pytest.raises(AssertionError, match="states no protocol"):
        assert_protocol_stated(number, "test")
    assert_protocol_stated({**number, "protocol": {"extractor": "Inception-v3", "samples": 50000,
                                                   "reference": "CIFAR-10 train", "reference_size": 50000}}, "test")


@pytest.fixture(scope="module")
def digits_sweep(cli, tmp_path_factory):
    """Every digits experiment as one job of one multirun: one interpreter start for all of them. Test batches of 16
    keep the VAE's 1000-sample bound cheap; FID and friends have their own tests."""
    return cli.train("-m", f"experiment={','.join(DIGITS)}", "debug=smoke", "logger=csv", "data.eval_batch_size=16",
                     "callbacks.fidelity=null", workdir=tmp_path_factory.mktemp("digits"), timeout=900)


@pytest.mark.slow
def test_every_digits_experiment_runs_with_debug_smoke(digits_sweep):
    assert digits_sweep.returncode == 0, digits_sweep.tail()
    (sweep_dir,) = (digits_sweep.output_dir / "sweeps").iterdir()
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["completed"] * len(DIGITS)
    for name, job in zip(DIGITS, jobs):
        assert f"experiment={name}" in job["overrides"]
        cfg = OmegaConf.load(f"{job['run_dir']}/config.yaml")
        assert cfg.trainer.max_epochs == 1, name  # debug=smoke came after the experiment
        final = json.loads(open(f"{job['run_dir']}/metrics.json").read())
        # a GAN logs its players' losses; WGAN-GP's 5 critic steps per G step leave G unstepped in 2 batches
        loss = final["train/loss" if "train/loss" in final else "train/loss_d"]
        assert final["epochs"] == 1 and math.isfinite(loss), name
        assert list(Path(job["run_dir"], "samples").glob("epoch_*.png")), name
