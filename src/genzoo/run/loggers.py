"""The loggers: built from ``cfg.logger`` by ``_target_`` like every other object, each writing into the run
folder. W&B runs online when credentials exist and offline otherwise, never with a prompt."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genzoo.config import build
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
    """``auto``: ``WANDB_MODE`` where it is set, else online with credentials and offline without."""
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


def wandb_logger(save_dir: str, mode: str = "auto", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, **kwargs):
    """Lightning's ``WandbLogger`` with genzoo's defaults: the mode as :func:`wandb_mode` says, the job's overrides
    as its name and the sweep folder as its group in a multirun, ``resume="allow"`` so ``resume=`` continues the
    run of the saved ``id``. Other keys go to ``WandbLogger`` (and on to ``wandb.init``) as they are."""
    from pytorch_lightning.loggers import WandbLogger

    sweep_group, job_name = sweep_group_and_name(Path(save_dir))
    kwargs.setdefault("resume", "allow")
    return WandbLogger(save_dir=save_dir, mode=wandb_mode(mode), name=name or job_name, group=group or sweep_group,
                       tags=tags or None, **kwargs)


def build_loggers(cfg: DictConfig) -> list:
    """Every logger of ``cfg.logger``; none has started its run (W&B's starts at its first use)."""
    loggers = []
    for name, node in (cfg.logger or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise GenzooError(f"logger.{name} names no _target_, so genzoo cannot build it: choose logger=wandb, "
                              "csv, tensorboard or none, or give logger.NAME._target_ (a Lightning logger class).")
        loggers.append(build(node, "logger"))
    return loggers


def log_config(loggers: list, cfg: DictConfig) -> None:
    """Hand every logger the resolved config (W&B's run config, CSV's and TensorBoard's hparams)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)


def finish_wandb(failed: bool) -> None:
    """Close the global W&B run, so the next job of a multirun starts its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
