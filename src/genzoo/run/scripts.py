"""Arguments that the scripts reading a trained run (``genzoo-eval``, ``genzoo-sample``) check alike."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genzoo.errors import GenzooError


def require_ckpt(cfg: DictConfig, script: str) -> None:
    """``ckpt`` is ``???`` in the YAML: read unset, OmegaConf would stop with a traceback naming no example."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise GenzooError(f"{script} needs ckpt=, the run to read: give a run folder or a .ckpt file, e.g. "
                          "ckpt=outputs/runs/<run>.")


def refuse_run_overrides(cfg: DictConfig, script: str) -> None:
    """Model and data are rebuilt from the run's own config.yaml (the weights fit no other model, and the scores
    are the run's), so a ``model`` or ``data`` node on the command line would be ignored, or fail to resolve."""
    touched = [key for key in ("model", "data") if key in cfg]
    if not touched:
        return
    override = touched[0]
    if HydraConfig.initialized():  # name the override as the user typed it
        for arg in HydraConfig.get().overrides.task:
            key = arg.split("=", 1)[0].lstrip("+~")
            if key.split("@", 1)[0].split(".", 1)[0] in touched:
                override = arg
                break
    raise GenzooError(f"{script} takes the model and data from the run's config.yaml, so '{override}' cannot "
                      "change them (another model, or other data, for a trained run is not supported): remove the "
                      "override, or train a run with the model and data you want.")

