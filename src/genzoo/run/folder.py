"""The run folder's own files: the resolved config, the environment it ran in, and its metric records."""

from __future__ import annotations

import json
import math
import platform
import secrets
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genzoo.files import write_atomically
from genzoo.run.loggers import build_loggers, log_config

PACKAGES = ["genzoo", "torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "wandb",
            "torchmetrics", "torch-fidelity", "scikit-learn", "numpy"]


def git_commit() -> str | None:
    """The commit of genzoo's source tree when it is a git checkout (an editable install), else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                           text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "git_commit": git_commit(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": versions,
    }


def write_run_files(run_dir: Path, cfg: DictConfig) -> None:
    """``config.yaml`` (resolved) and ``env.json``."""
    write_atomically(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_atomically(run_dir / "env.json", json.dumps(environment(), indent=2) + "\n")


def scalar_metrics(metrics: dict) -> dict[str, float | str]:
    """The logged values that are numbers, as floats (non-finite ones as their name, which JSON can hold)."""
    out = {}
    for key, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        out[key] = v if math.isfinite(v) else str(v)
    return out


def open_run(cfg: DictConfig) -> tuple[Path, list]:
    """Give the W&B run its id, resolve the config, build the loggers and hand them the config (a logger that cannot
    be built or started stops the run before its folder has any file), then write ``config.yaml`` and ``env.json``
    (rank zero only): (run folder, loggers)."""
    from pytorch_lightning.utilities import rank_zero_only

    if "wandb" in (cfg.logger or {}) and cfg.logger.wandb.get("id") is None:
        cfg.logger.wandb.id = secrets.token_hex(4)  # saved in config.yaml, so resume= continues this W&B run
    OmegaConf.resolve(cfg)
    run_dir = Path(cfg.paths.run_dir)
    loggers = build_loggers(cfg)
    log_config(loggers, cfg)  # W&B's run starts here: a forced online run it refuses leaves no file behind
    if rank_zero_only.rank == 0:
        write_run_files(run_dir, cfg)
    return run_dir, loggers
