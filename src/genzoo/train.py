"""genzoo-train: one training run (or one job of a sweep) as a straight line.

    genzoo-train                                   # PixelCNN on the digits, W&B offline unless logged in
    genzoo-train model=gated_pixelcnn trainer=gpu logger=csv
    genzoo-train -m model=pixelcnn,gated_pixelcnn seed=0,1
    genzoo-train resume=outputs/runs/2026-11-25_12-00-00_a1b2c3

Config → checks → run folder → data, model, loggers, callbacks → fit → test on the best checkpoint. A config that
is refused leaves no folder; a run folder takes one process at a time.
"""

from __future__ import annotations

import errno
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import LearningRateMonitor

from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.resume import in_place_args, resume_callbacks, resumed_config, training_left
from genzoo.run.checkpoints import AtomicCheckpointIO, check_weights_fit
from genzoo.run.command_line import run_hydra_app
from genzoo.run.folder import open_run
from genzoo.run.gpus import job_devices
from genzoo.run.guard import hold_run_folder, leaves_no_folder_when_refused, refuse_existing_run
from genzoo.run.loggers import finish_wandb
from genzoo.run.process import (check_accelerator, check_model_fits_data, check_slurm_tasks, check_strategy,
                                cluster_plugins, start_process, strategy_for)
from genzoo.run.requeue import finished_run_result, has_checkpoint, requeued_run
from genzoo.run.selection import settle_selection
from genzoo.schema import check_config


@leaves_no_folder_when_refused
def train(cfg: DictConfig) -> float | None:
    hydra_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    ckpt_path = state = None
    requeued = not cfg.get("resume") and hydra_dir is not None and requeued_run(hydra_dir)
    if requeued and has_checkpoint(hydra_dir):  # a requeued job continues its own run (genzoo.run.requeue)
        with open_dict(cfg):
            cfg.resume = str(hydra_dir)
    if cfg.get("resume"):
        cfg, ckpt_path, state = resumed_config(cfg)
        done = training_left(state, cfg.trainer)
        if done is not None:
            # Nothing failed: the run is complete, so a job that resumes its run after every pre-emption ends
            # well. Nothing is built and the run's files stay as its last process left them.
            print(f"{ckpt_path} has {done}, so there is nothing left to train and the run is left as it is: to "
                  f"train longer, resume with a larger trainer.max_epochs (or trainer.max_steps).", file=sys.stderr)
            return finished_run_result(hydra_dir, cfg.model.get("monitor")) if requeued else None
    elif hydra_dir is not None and not requeued:  # a requeued job without a checkpoint starts again in its folder
        refuse_existing_run(hydra_dir)
    settle_selection(cfg)
    check_config(cfg, "genzoo-train")
    with hold_run_folder(Path(cfg.paths.run_dir), "genzoo-train"), job_devices(cfg) as devices:
        return fit_and_test(cfg, ckpt_path, state, devices)


def fit_and_test(cfg: DictConfig, ckpt_path, state: dict | None, devices: list[int] | None = None) -> float | None:
    check_strategy(cfg)
    check_slurm_tasks(cfg)
    check_accelerator(cfg, resumed=ckpt_path is not None)

    trainer_cfg = start_process(cfg)
    if devices is not None:  # this job's own GPU in a parallel sweep on one machine (genzoo.run.gpus)
        trainer_cfg.devices = devices

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    check_model_fits_data(model, datamodule)
    if ckpt_path is not None:
        check_weights_fit(model, state["state_dict"], ckpt_path, "resume from a checkpoint of this run, and leave out "
                          "overrides that change the model's networks (or start a new run)")
    strategy_for(trainer_cfg, model)

    run_dir, loggers = open_run(cfg)
    callbacks = [build(c, "callbacks") for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += resume_callbacks()
    if not loggers:  # LearningRateMonitor refuses a trainer without a logger; metrics.jsonl still gets the metrics
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build(trainer_cfg, "trainer", callbacks=callbacks, logger=loggers or False,
                    plugins=[AtomicCheckpointIO(), *cluster_plugins()])

    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        # a search optimises what gets tested: the best checkpoint's score, not the last epoch's
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_score is not None:
            monitored = ckpt.best_model_score
        else:
            monitored = trainer.callback_metrics.get(model.monitor) if model.monitor else None
        if cfg.test:
            best = ckpt.best_model_path if ckpt is not None else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=True)
        failed = False
    except MisconfigurationException as e:
        monitored = re.search(r"monitor='([^']*)'", str(e))
        if monitored is None or "could not find the monitored key" not in str(e):
            raise
        logged = sorted(k for k in trainer.callback_metrics if k.startswith(("val/", "train/")))
        raise GenzooError(f"The checkpoints are chosen by {monitored.group(1)}, which this run never logs (it logs "
                          f"{', '.join(logged) or 'nothing yet'}): set model.monitor to one of those, or to null to "
                          "keep the last epoch's.") from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise GenzooError(f"The disk is full ({e.filename or run_dir}), so the run stopped; its checkpoints are "
                          f"whole: free some space and continue with resume={run_dir}.") from None
    finally:
        finish_wandb(failed)
    return float(monitored) if monitored is not None else None


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return train(cfg)


def main() -> None:
    run_hydra_app(hydra_main, "train", in_place_args)


if __name__ == "__main__":
    main()
