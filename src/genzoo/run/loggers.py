"""The loggers: built from ``cfg.logger`` by ``_target_`` like every other object, each writing into the run
folder. W&B runs online when credentials exist and its server answers, offline otherwise, never with a prompt, and
every wait for it is bounded (:mod:`genzoo.run.wandb_server` decides the mode, :mod:`genzoo.run.wandb_logger`
guards the run; here its end).

- Start: the server is asked for an answer for at most ``probe_timeout`` s before the run folder has any file, then
  ``wandb.init`` waits at most ``init_timeout`` s.
- Each log call returns at once whatever the server does (wandb-core buffers), or is dropped once W&B has failed.
- End: :func:`finish_wandb` waits at most ``finish_timeout`` s for the upload (wandb's own setting, which marks the
  run crashed on the server and keeps the rest on disk) and names the local folder to ``wandb sync`` later.

Left out: after a finish that gave up, wandb-core still takes up to about 12 s to exit with the process (its own
telemetry export, which no setting shortens).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.run.wandb_server import (PROBE_TIMEOUT, WANDB_MODES, requested_mode, wandb_credentials,  # noqa: F401
                                     wandb_mode)

log = logging.getLogger(__name__)

INIT_TIMEOUT = 20.0  # wandb's default is 90 s; a server that answered the probe starts a run in a few seconds
FINISH_TIMEOUT = 60.0  # wandb's default is to wait for the upload for ever


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
                 tags: list[str] | None = None, probe_timeout: float = PROBE_TIMEOUT,
                 init_timeout: float = INIT_TIMEOUT, finish_timeout: float = FINISH_TIMEOUT, **kwargs):
    """genzoo's ``WandbLogger`` (:mod:`genzoo.run.wandb_logger`): the mode as :func:`wandb_mode` says (a forced
    online mode that cannot work stops here, before the run folder has any file), the job's overrides as its name
    and the sweep folder as its group in a multirun, ``resume="allow"`` so ``resume=`` continues the run of the
    saved ``id``, and wandb's ``init_timeout`` and ``finish_timeout``. Other keys go to ``WandbLogger`` (and on to
    ``wandb.init``) as they are."""
    from pytorch_lightning.utilities import rank_zero_only

    from genzoo.run.wandb_logger import WandbLogger

    asked, who, fix = requested_mode(mode)
    if rank_zero_only.rank == 0:
        resolved = wandb_mode(mode, save_dir=save_dir, run_id=kwargs.get("id"), probe_timeout=probe_timeout)
    else:  # only rank zero starts the W&B run; the others neither probe nor refuse, so they cannot disagree with it
        resolved = "offline"
    sweep_group, job_name = sweep_group_and_name(Path(save_dir))
    kwargs.setdefault("resume", "allow")
    settings = {"init_timeout": float(init_timeout), "finish_timeout": float(finish_timeout),
                "finish_timeout_raises": True, **(kwargs.pop("settings", None) or {})}
    return WandbLogger(save_dir=save_dir, mode=resolved, name=name or job_name, group=group or sweep_group,
                       tags=tags or None, settings=settings, refuse=(who, fix) if asked == "online" else None,
                       **kwargs)


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
    """Close the global W&B run, so the next job of a multirun starts its own instead of logging into this one.
    Never raises for W&B: where the upload gave up or wandb failed, one line names the run's local folder."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to close
    run = wandb.run if wandb is not None else None
    if run is None:
        return
    folder = run.settings.sync_dir
    try:
        run.finish(exit_code=1 if failed else 0)
    except TimeoutError:  # finish_timeout_raises: wandb gave up uploading after finish_timeout seconds
        log.warning(f"W&B did not finish uploading within {run.settings.finish_timeout:g} s, so the rest of the "
                    f"run stays in {folder}: upload it later with `wandb sync {folder}`.")
    except Exception as e:
        from genzoo.run.wandb_logger import describe, restart_wandb_core

        log.warning(f"W&B could not finish the run ({describe(e)}); its local files are in {folder}: upload them "
                    f"later with `wandb sync {folder}`.")
        restart_wandb_core()  # else a broken wandb-core prints a traceback at exit, and the next job meets it
