"""genzoo-train: one training run (or one job of a sweep) as a straight line.

    genzoo-train                                   # PixelCNN on the digits, W&B offline unless logged in
    genzoo-train model=gated_pixelcnn trainer=gpu logger=csv
    genzoo-train -m model=pixelcnn,gated_pixelcnn seed=0,1
    genzoo-train resume=outputs/runs/2026-11-25_12-00-00_a1b2c3

Config → checks → run folder → data, model, loggers, callbacks → fit → test on the best checkpoint.
"""

from __future__ import annotations

import errno
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from genzoo.checkpointing import AtomicCheckpointIO, LoaderPosition, RngState
from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.loggers import finish_wandb
from genzoo.runs import find_checkpoint, open_run, read_checkpoint, start_process


def relocate(cfg: DictConfig, old: str, new: str) -> DictConfig:
    """Point every path under the run folder ``old`` at ``new`` (a run folder that was moved or copied)."""
    container = OmegaConf.to_container(cfg, resolve=False)

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and (node == old or node.startswith(old + "/")):
            return new + node[len(old):]
        return node

    return OmegaConf.create(walk(container))


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The saved config of the run named by ``resume=``, with this command's plain ``key=value`` overrides."""
    ckpt, run_dir = find_checkpoint(cfg.resume)
    read_checkpoint(ckpt, mmap=True)  # a damaged file stops here, before anything is built
    if run_dir is None:  # a bare checkpoint: continue it with the config of this command, in a new folder
        return cfg, ckpt
    saved = OmegaConf.load(run_dir / "config.yaml")
    saved = relocate(saved, str(saved.paths.run_dir), str(run_dir))
    groups = set(HydraConfig.get().runtime.choices)
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key in groups or isinstance(OmegaConf.select(saved, key), DictConfig):
            raise GenzooError(f"resume= continues the saved config of {run_dir}, so '{key}=' cannot choose another "
                              f"config group there: start a new run to change {key}.")
        OmegaConf.update(saved, key, override.value(), force_add=True)
    saved.resume = str(ckpt)
    return saved, ckpt


def check_strategy(cfg: DictConfig) -> None:
    strategy = cfg.trainer.get("strategy")
    name = strategy if isinstance(strategy, str) else (strategy or {}).get("_target_", "")
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and name in ("ddp", "pytorch_lightning.strategies.DDPStrategy"):
        raise GenzooError("Lightning's 'ddp' strategy re-launches the script and breaks inside a Hydra multirun: "
                          "add trainer.strategy=ddp_spawn to the sweep.")


def check_model_fits_data(model, datamodule) -> None:
    for key in ("shape", "levels", "num_classes"):
        m, d = getattr(model, key), getattr(datamodule, key)
        if m != d:
            raise GenzooError(f"model.{key}={list(m) if isinstance(m, tuple) else m} does not match the data's "
                              f"{key} {list(d) if isinstance(d, tuple) else d}: remove the override of model.{key} "
                              f"(the model config takes it from data.{key}).")


def train(cfg: DictConfig) -> float | None:
    ckpt_path = None
    if cfg.get("resume"):
        cfg, ckpt_path = resumed_config(cfg)
    check_strategy(cfg)

    trainer_cfg = start_process(cfg)

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    check_model_fits_data(model, datamodule)

    run_dir, loggers = open_run(cfg)
    callbacks = [build(c, "callbacks") for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += [RngState(), LoaderPosition()]  # not optional: they make a resumed run continue exactly
    if not loggers:  # LearningRateMonitor refuses a trainer without a logger; metrics.jsonl still gets the metrics
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build(trainer_cfg, "trainer", callbacks=callbacks, logger=loggers or False,
                    plugins=[AtomicCheckpointIO()])

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
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=True)
        failed = False
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise GenzooError(f"The disk is full ({e.filename or run_dir}), so the run stopped; its checkpoints are "
                          f"whole: free some space and continue with resume={run_dir}.") from None
    finally:
        finish_wandb(failed)
    return float(monitored) if monitored is not None else None


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
