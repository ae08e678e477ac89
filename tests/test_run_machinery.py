"""The pieces every entry point shares: atomic files, evaluation mode, the loggers, the strategy a GAN needs, and
the few library internals genzoo relies on, each pinned here so that a library update that moves one fails loudly."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from genzoo.callbacks.sample_grid import image_grid
from genzoo.errors import GenzooError
from genzoo.files import save_atomically, write_atomically
from genzoo.nn.modes import evaluating
from genzoo.run.loggers import build_loggers
from genzoo.run.process import strategy_for
from genzoo.sweeps import BASIC_SWEEPER, job_error

SRC = Path(__file__).parents[1] / "src" / "genzoo"


# ---- one way to write a file ---------------------------------------------------------------------------------------
def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_atomically(path, "one\n")
    write_atomically(path, b"two\n")
    save_atomically({"w": torch.ones(2)}, tmp_path / "sub" / "w.pt")
    assert path.read_text() == "two\n"
    assert torch.equal(torch.load(tmp_path / "sub" / "w.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json", "w.pt"]


def test_a_write_that_fails_halfway_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "stats.pt"
    write_atomically(path, "old")

    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.pt"]


def test_no_module_writes_a_file_in_place_by_hand():
    """torch.save to a final path or a hand-made temporary file: use genzoo.files instead."""
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("replace", "rename") and node.args
                    and "tmp" in ast.unparse(node.func.value).lower() and path.name != "files.py"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == [] or offenders == ["data/cache.py:72"], offenders  # a whole folder renamed into place


# ---- evaluation mode for a while -----------------------------------------------------------------------------------
def test_evaluating_restores_every_submodule_mode_also_after_an_error():
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(3))
    net.train()
    net[1].eval()  # a submodule set apart from its parent keeps its own mode
    with pytest.raises(ValueError), evaluating(net):
        assert not net.training and not net[0].training and not torch.is_grad_enabled()
        raise ValueError
    assert net.training and net[0].training and not net[1].training
    assert torch.is_grad_enabled()


# ---- pictures ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, scale", [(8, 8), (28, 3), (32, 2), (64, 1)])
def test_sample_grids_upscale_small_images_by_whole_pixels(size, scale):
    x = torch.randint(17, (64, 1, size, size))
    grid = image_grid(x, levels=17)
    side = 8 * (size * scale + 2) + 2  # 8 × 8 images, 2 px of padding
    assert grid.shape == (3, side, side)
    cell = grid[0, 2: 2 + size * scale, 2: 2 + size * scale]  # the first image, nearest-neighbour blocks
    assert torch.equal(cell, (x[0, 0].float() / 16).repeat_interleave(scale, 0).repeat_interleave(scale, 1))


# ---- loggers -------------------------------------------------------------------------------------------------------
def compose(*overrides: str):
    with hydra.initialize_config_module("genzoo.conf", version_base="1.3"):
        return hydra.compose("train", overrides=list(overrides))


def test_every_logger_config_builds_its_logger_from_its_target_into_the_run_folder(tmp_path):
    for choice, cls in [("csv", "CSVLogger"), ("wandb", "WandbLogger")]:
        cfg = compose(f"logger={choice}", f"paths.output_dir={tmp_path}", "logger.wandb.mode=disabled"
                      if choice == "wandb" else "seed=0")
        cfg.paths.run_dir = str(tmp_path / choice)
        (logger,) = build_loggers(cfg)
        assert type(logger).__name__ == cls
        assert Path(logger.save_dir) == tmp_path / choice


def test_a_logger_without_a_target_is_refused_in_one_sentence(tmp_path):
    cfg = OmegaConf.create({"logger": {"mlflow": {"tracking_uri": "x"}}})
    with pytest.raises(GenzooError, match=r"^logger\.mlflow names no _target_.*logger=wandb, csv.*\.$"):
        build_loggers(cfg)


# ---- a GAN under DDP -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [("ddp", "ddp_find_unused_parameters_true"),
                                             ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"),
                                             ("auto", "auto")])
def test_a_model_that_leaves_parameters_unused_gets_the_ddp_strategy_that_finds_them(given, expected):
    from pytorch_lightning.strategies import StrategyRegistry

    class Gan:
        finds_unused_parameters = True

    cfg = OmegaConf.create({"strategy": given})
    strategy_for(cfg, Gan())
    assert cfg.strategy == expected
    assert expected == "auto" or expected in StrategyRegistry, f"Lightning has no strategy named {expected}"
    plain = OmegaConf.create({"strategy": given})
    strategy_for(plain, object())
    assert plain.strategy == given


# ---- library internals, each behind one name -----------------------------------------------------------------------
def test_hydra_keeps_a_failed_jobs_exception_where_job_error_reads_it():
    error = ValueError("bad value")
    job = JobReturn(overrides=["model.lr=x"], status=JobStatus.FAILED, _return_value=error)
    assert job_error(job) is error, f"hydra-core {hydra.__version__} keeps a failed job's exception elsewhere"


def test_the_basic_sweeper_is_the_class_hydra_names_in_its_default_config():
    with hydra.initialize_config_module("genzoo.conf", version_base="1.3"):
        hydra_cfg = hydra.compose("train", return_hydra_config=True).hydra
    assert hydra_cfg.sweeper._target_ == BASIC_SWEEPER, f"hydra-core {hydra.__version__} renamed its basic sweeper"
    module, name = BASIC_SWEEPER.rsplit(".", 1)
    assert hasattr(importlib.import_module(module), name)


def test_no_module_reads_private_attributes_of_lightning_or_torch_outside_the_pinned_places():
    """Private names genzoo reads of other objects, each pinned by a test above (OneCycleLR's length keys, read as
    strings, by test_resume.py)."""
    allowed = {"_return_value"}
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if owner not in ("self", "cls", "super()") and not owner.startswith("self."):
                    found.add(node.attr)
    assert found <= allowed, f"private attributes read outside their owner: {sorted(found - allowed)}"
