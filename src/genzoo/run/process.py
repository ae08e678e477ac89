"""The process a run lives in: torch's threads, the seeds, and the trainer options checked against this machine
and this model before anything is built."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from genzoo.errors import GenzooError

# Lightning's registered names of the DDP strategies, and the variant of each that looks for unused parameters.
UNUSED_PARAMETERS = {"ddp": "ddp_find_unused_parameters_true", "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
                     "ddp_fork": "ddp_fork_find_unused_parameters_true",
                     "ddp_notebook": "ddp_notebook_find_unused_parameters_true"}


def start_process(cfg: DictConfig) -> DictConfig:
    """Set torch's threads and every seed from ``cfg``; return the trainer's config without genzoo's own keys."""
    import pytorch_lightning as pl
    import torch

    trainer_cfg = cfg.trainer.copy()
    with open_dict(trainer_cfg):
        threads = trainer_cfg.pop("torch_threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return trainer_cfg


def strategy_for(trainer_cfg: DictConfig, model) -> None:
    """A model whose steps leave some parameters without a gradient (a GAN's two players) says so with
    ``finds_unused_parameters = True``; under DDP its strategy then looks for them, or DDP's reducer stops."""
    if not getattr(model, "finds_unused_parameters", False):
        return
    strategy = trainer_cfg.get("strategy")
    with open_dict(trainer_cfg):
        if isinstance(strategy, str) and strategy in UNUSED_PARAMETERS:
            trainer_cfg.strategy = UNUSED_PARAMETERS[strategy]
        elif isinstance(strategy, DictConfig) and str(strategy.get("_target_", "")).endswith("DDPStrategy"):
            strategy.find_unused_parameters = True  # passed on to DistributedDataParallel


def check_accelerator(cfg: DictConfig, resumed: bool) -> None:
    """Lightning's own message for a GPU trainer on a machine without one lists every trainer option; say which."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if accelerator == "gpu" and torch.backends.mps.is_available():  # Lightning's "gpu" is Apple's GPU there
        return
    if resumed:  # the trainer group of a resumed run is fixed: set its keys instead
        fix = ["trainer.accelerator=auto"]
        if cfg.trainer.get("devices") not in (None, 1, "1", "auto"):
            fix.append("trainer.devices=1")
        if cfg.trainer.get("strategy") not in (None, "auto"):
            fix.append("trainer.strategy=auto")
        hint = f"resume with {' '.join(fix)} to continue on this machine's CPU"
    else:
        choice = HydraConfig.get().runtime.choices.get("trainer") if HydraConfig.initialized() else None
        hint = (f"leave out trainer={choice} to use the default trainer (trainer=default, which picks the CPU here), "
                "or choose trainer=cpu") if choice not in (None, "default") else \
            "use the default trainer.accelerator=auto, or trainer=cpu"
    raise GenzooError(f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none "
                      f"(torch.cuda.is_available() is False): {hint}.")


def check_strategy(cfg: DictConfig) -> None:
    strategy = cfg.trainer.get("strategy")
    name = strategy if isinstance(strategy, str) else (strategy or {}).get("_target_", "")
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    # under submitit's SLURM jobs srun starts every rank, and Lightning re-launches nothing
    slurm_tasks = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    if multirun and name in ("ddp", "pytorch_lightning.strategies.DDPStrategy") and not slurm_tasks:
        raise GenzooError("Lightning's 'ddp' strategy re-launches the script and breaks inside a Hydra multirun: "
                          "add trainer.strategy=ddp_spawn to the sweep.")


def check_slurm_tasks(cfg: DictConfig, environ: dict | None = None) -> None:
    """Under ``srun`` Lightning runs one process per SLURM task and hangs, silently, when the tasks per node differ
    from the trainer's devices (or the nodes from ``trainer.num_nodes``): say which to change instead."""
    environ = os.environ if environ is None else environ
    per_node, nodes = environ.get("SLURM_NTASKS_PER_NODE", ""), environ.get("SLURM_NNODES", "")
    strategy = cfg.trainer.get("strategy")
    name = strategy if isinstance(strategy, str) else (strategy or {}).get("_target_", "")
    devices, num_nodes = cfg.trainer.get("devices"), int(cfg.trainer.get("num_nodes") or 1)
    if not per_node.isdigit() or "ddp" not in str(name) or not isinstance(devices, int) or devices < 1:
        return
    if int(per_node) != devices:
        raise GenzooError(f"SLURM runs {per_node} task(s) per node and trainer.devices={devices}, and Lightning "
                          f"needs one task per device or it waits for ever: ask for --ntasks-per-node={devices} "
                          f"(submitit: hydra.launcher.tasks_per_node={devices}), or set trainer.devices={per_node}.")
    if nodes.isdigit() and int(nodes) != num_nodes:
        raise GenzooError(f"SLURM gave the job {nodes} node(s) and trainer.num_nodes={num_nodes}: set "
                          f"trainer.num_nodes={nodes}, or ask for --nodes={num_nodes}.")


def cluster_plugins() -> list:
    """Under submitit's SLURM jobs, submitit's signal handler requeues the job (``hydra_plugins.genzoo_launcher``); the
    trainer's SLURM environment is told not to requeue it a second time."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return []
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def check_model_fits_data(model, datamodule) -> None:
    for key in ("shape", "levels", "num_classes"):
        m, d = getattr(model, key), getattr(datamodule, key)
        if m != d:
            raise GenzooError(f"model.{key}={list(m) if isinstance(m, tuple) else m} does not match the data's "
                              f"{key} {list(d) if isinstance(d, tuple) else d}: remove the override of model.{key} "
                              f"(the model config takes it from data.{key}).")
