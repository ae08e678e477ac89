"""``resume=RUN``: the saved config of the run to continue, the checkpoint it continues from, and whether any
training is left; and the arguments that make Hydra run the resumed process in the run's own folder."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from genzoo.errors import GenzooError
from genzoo.run.checkpoints import find_checkpoint, read_checkpoint


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


def in_place_args(args: list[str]) -> list[str]:
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
