"""Loggers from ``cfg.logger``: W&B (online when credentials exist, else offline, never a prompt), CSV,
TensorBoard, or none. Every logger writes into the run folder."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genzoo.errors import GenzooError

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials() -> bool:
    """True when W&B has an API key: the environment or a ~/.netrc entry, as ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str) -> str:
    if requested not in WANDB_MODES:
        raise GenzooError(f"logger.wandb.mode={requested!r} is unknown: use one of {', '.join(WANDB_MODES)}.")
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled", "dryrun"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    return "online" if wandb_credentials() else "offline"


def sweep_group_and_name(run_dir: Path) -> tuple[str | None, str]:
    """In a multirun: (the sweep folder's name, the job's overrides); in a single run: (None, folder name)."""
    if not HydraConfig.initialized():
        return None, run_dir.name
    hc = HydraConfig.get()
    overrides = hc.job.override_dirname or run_dir.name
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name, overrides
    return None, overrides


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    loggers = []
    for name, opts in (cfg.logger or {}).items():
        opts = OmegaConf.to_container(opts, resolve=True) if opts is not None else {}
        if name == "wandb":
            group, job_name = sweep_group_and_name(run_dir)
            loggers.append(WandbLogger(
                project=opts.get("project", "genzoo"), entity=opts.get("entity"),
                name=opts.get("name") or job_name, group=opts.get("group") or group, id=opts.get("id"),
                tags=opts.get("tags") or None, save_dir=str(run_dir), resume="allow",
                mode=wandb_mode(opts.get("mode", "auto")),
                config=OmegaConf.to_container(cfg, resolve=True),
            ))
        elif name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version="", **opts))
        elif name == "tensorboard":
            try:
                loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **opts))
            except ModuleNotFoundError as e:
                raise GenzooError("logger=tensorboard needs the tensorboard package: `pip install tensorboard`, "
                                  "or choose logger=csv.") from e
        else:
            raise GenzooError(f"logger.{name} is not a logger genzoo knows: use wandb, csv, tensorboard or none.")
    return loggers


def finish_wandb(failed: bool) -> None:
    """Close the global W&B run, so the next job of a multirun starts its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
