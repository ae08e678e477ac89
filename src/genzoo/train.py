"""genzoo-train: one training run (or one job of a sweep) as a straight line.

    genzoo-train                                   # PixelCNN on the digits, W&B offline unless logged in
    genzoo-train model=gated_pixelcnn trainer=gpu logger=csv
    genzoo-train -m model=pixelcnn,gated_pixelcnn seed=0,1
    genzoo-train resume=outputs/runs/2026-11-25_12-00-00_a1b2c3

Config → checks → run folder → data, model, loggers, callbacks → fit → test on the best checkpoint.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from genzoo.checkpointing import AtomicCheckpointIO, KeepNewestAfterResume, LoaderPosition, RngState
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


def saved_choices(run_dir: Path) -> dict | None:
    """The config-group choices a run was started with (Hydra's ``.hydra/hydra.yaml``), or None without one."""
    try:
        return dict(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices)
    except (OSError, AttributeError, ValueError):
        return None


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, Path, dict]:
    """The saved config of the run named by ``resume=``, with this command's plain ``key=value`` overrides; the
    checkpoint it continues from; and that checkpoint's contents (tensors left on disk)."""
    ckpt, run_dir = find_checkpoint(cfg.resume)
    state = read_checkpoint(ckpt, mmap=True)  # a damaged file stops here, before anything is built
    if run_dir is None:  # a bare checkpoint: continue it with the config of this command, in a new folder
        return cfg, ckpt, state
    saved = OmegaConf.load(run_dir / "config.yaml")
    saved = relocate(saved, str(saved.paths.run_dir), str(run_dir))
    groups = set(HydraConfig.get().runtime.choices)
    choices = saved_choices(run_dir)
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key in groups:
            value = None if override.is_delete() else override.value()
            if choices is not None and key in choices and value == choices[key] and not override.is_delete():
                continue  # the choice the run was trained with: its content is in the saved config already
            was = (f"it was trained with {key}={'null' if choices[key] is None else choices[key]}"
                   if choices is not None and key in choices else f"its .hydra/hydra.yaml, which names its {key}, "
                                                                  "is missing")
            raise GenzooError(f"resume= continues the saved config of {run_dir} and {was}, so '{key}=' cannot choose "
                              f"another config group there: leave out {override.input_line}, or start a new run to "
                              f"change {key}.")
        if isinstance(OmegaConf.select(saved, key), DictConfig):
            raise GenzooError(f"resume= continues the saved config of {run_dir}, so '{key}=' cannot replace a whole "
                              f"config node there: set its keys one by one ({key}.NAME=VALUE), or start a new run to "
                              f"change {key}.")
        OmegaConf.update(saved, key, override.value(), force_add=True)
    saved.resume = str(ckpt)
    return saved, ckpt, state


def training_left(state: dict, trainer_cfg: DictConfig) -> str | None:
    """None when the checkpoint has training left under the trainer's limits, else why not (Lightning's rule:
    the epochs a checkpoint counts as processed, or its optimiser steps, reached ``max_epochs`` or ``max_steps``)."""
    max_steps = trainer_cfg.get("max_steps")
    max_steps = -1 if max_steps is None else int(max_steps)
    max_epochs = trainer_cfg.get("max_epochs")
    max_epochs = (1000 if max_steps == -1 else -1) if max_epochs is None else int(max_epochs)  # Lightning's default
    step = int(state.get("global_step", 0))
    epochs = int(state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
                 .get("processed", 0))
    if max_steps != -1 and step >= max_steps:
        return f"reached trainer.max_steps={max_steps} (step {step})"
    if max_epochs != -1 and epochs >= max_epochs:
        return f"trained all trainer.max_epochs={max_epochs} epochs"
    return None


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
        cfg, ckpt_path, state = resumed_config(cfg)
        done = training_left(state, cfg.trainer)
        if done is not None:
            # Nothing failed: the run is complete, so a job that resumes its run after every pre-emption ends
            # well. Nothing is built and the run's files stay as its last process left them.
            print(f"{ckpt_path} has {done}, so there is nothing left to train and the run is left as it is: to "
                  f"train longer, resume with a larger trainer.max_epochs (or trainer.max_steps).", file=sys.stderr)
            return None
    check_strategy(cfg)
    check_accelerator(cfg, resumed=ckpt_path is not None)

    trainer_cfg = start_process(cfg)

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    check_model_fits_data(model, datamodule)

    run_dir, loggers = open_run(cfg)
    callbacks = [build(c, "callbacks") for c in (cfg.callbacks or {}).values() if c is not None]
    # not optional: they make a resumed run continue exactly, and leave one step checkpoint as without a resume
    callbacks += [RngState(), LoaderPosition(), KeepNewestAfterResume()]
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


def resume_in_place(args: list[str]) -> list[str]:
    """Command-line arguments for Hydra: with ``resume=RUN`` (a run folder or a checkpoint in one), the process runs
    in that run's folder, appending to its ``train.log``, instead of making a new, nearly empty run folder.

    Hydra makes its run folder before genzoo sees the config, hence the arguments. ``.hydra/`` is not written again
    (``hydra.output_subdir=null``): it keeps the choices the run was started with, which ``resume=`` compares a
    group choice with, and ``config.yaml`` and ``env.json`` record the resumed process. Anything unusual (a
    multirun, the user's own ``hydra.run.dir``, a path that does not resolve or needs quoting) is left to Hydra
    and ``train``, which report it.
    """
    if any(a in ("-m", "--multirun") or a.startswith(("hydra.run.dir=", "hydra.output_subdir=")) for a in args):
        return args
    resume = [a for a in args if a.startswith("resume=")]
    if len(resume) != 1:
        return args
    try:
        _, run_dir = find_checkpoint(OverridesParser.create().parse_overrides(resume)[0].value())
    except Exception:  # noqa: BLE001 - a malformed override or a wrong path is reported once the config is built
        return args
    if run_dir is None or any(c in str(run_dir) for c in "'\\$"):
        return args
    return [*args, f"hydra.run.dir='{run_dir}'", "hydra.output_subdir=null"]


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return train(cfg)


def main() -> None:
    sys.argv[1:] = resume_in_place(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
