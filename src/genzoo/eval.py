"""genzoo-eval: test bits/dim and sample quality of a saved model.

    genzoo-eval ckpt=outputs/runs/2026-11-25_12-00-00_a1b2c3          # the run's best checkpoint
    genzoo-eval ckpt=path/to/last.ckpt fidelity.extractor=inception fidelity.n=1000 trainer=gpu
    genzoo-eval ckpt=... trainer=ddp_cpu                                # every rank samples its share

The checkpoint is read with ``torch.load(weights_only=True)``; model and data are rebuilt from the evaluated run's
``config.yaml`` (next to ``checkpoints/``). A Lightning test pass gives ``test/bpd`` (or ``test/elbo_bpd``) where
the model has a likelihood, and the ``Fidelity`` callback the sample-quality metrics. ``metrics.json`` lands in
this evaluation's folder (``outputs/evals/…``) and, copied, in the evaluated run's ``evals/<folder name>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genzoo.callbacks.metrics_file import scalar_metrics
from genzoo.config import build
from genzoo.errors import GenzooError
from genzoo.evaluation import inception
from genzoo.loggers import finish_wandb
from genzoo.runs import find_checkpoint, open_run, read_checkpoint, start_process


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


def find_run_checkpoint(path: str) -> tuple[Path, Path]:
    """(checkpoint, the run folder holding its config.yaml) for ``ckpt=`` a run folder or a .ckpt file."""
    ckpt, run_dir = find_checkpoint(path, arg="ckpt", best=True)
    if run_dir is None and (ckpt.parent / "config.yaml").is_file():  # a checkpoint kept beside its config
        run_dir = ckpt.parent
    if run_dir is None:
        raise GenzooError(f"ckpt={path} has no config.yaml of its run beside checkpoints/: give a checkpoint inside "
                          "a genzoo run folder (run_dir/checkpoints/NAME.ckpt).")
    return ckpt, run_dir


def load_model(ckpt: Path, saved: DictConfig):
    """The model of the saved config with the checkpoint's weights; one sentence when either is wrong."""
    state = read_checkpoint(ckpt)["state_dict"]
    model = build(saved.model, "model")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise GenzooError(f"The weights in {ckpt} do not fit the model its config.yaml describes "
                          f"({str(e).splitlines()[0][:120]}): give the checkpoint of that run.") from None
    return model


def evaluate(cfg: DictConfig) -> dict:
    require_ckpt(cfg, "genzoo-eval")
    refuse_run_overrides(cfg, "genzoo-eval")
    ckpt, evaluated = find_run_checkpoint(str(cfg.ckpt))
    saved = OmegaConf.load(evaluated / "config.yaml")
    trainer_cfg = start_process(cfg)
    datamodule = build(saved.data, "data")
    model = load_model(ckpt, saved)
    if cfg.fidelity.extractor == "inception":  # fail before the trainer starts when the weights cannot be had
        inception.inception_weights(cfg.paths.cache_dir, cfg.fidelity.inception_weights,
                                    download=cfg.fidelity.get("download", True))

    run_dir, loggers = open_run(cfg)
    fidelity = build(cfg.fidelity, "fidelity")
    trainer = build(trainer_cfg, "trainer", callbacks=[fidelity], logger=loggers or False)

    failed = True
    try:
        trainer.test(model, datamodule=datamodule, verbose=True)
        failed = False
    finally:
        finish_wandb(failed)
    record = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")}
    record.update(checkpoint=str(ckpt), evaluated_run=str(evaluated), extractor=cfg.fidelity.extractor,
                  n=cfg.fidelity.n or len(datamodule.splits["test"]), seed=cfg.seed)
    if trainer.is_global_zero:
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        for folder in (run_dir, evaluated / "evals" / run_dir.name):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(text)
    return record


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
