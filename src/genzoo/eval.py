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

import hydra
from omegaconf import DictConfig, OmegaConf

from genzoo.config import build
from genzoo.evaluation import inception
from genzoo.files import write_atomically
from genzoo.run.checkpoints import find_run_checkpoint, load_model
from genzoo.run.folder import open_run, scalar_metrics
from genzoo.run.loggers import finish_wandb
from genzoo.run.process import start_process
from genzoo.run.guard import hold_run_folder, leaves_no_folder_when_refused
from genzoo.run.command_line import run_hydra_app
from genzoo.run.scripts import refuse_run_overrides, require_ckpt
from genzoo.schema import check_config


@leaves_no_folder_when_refused
def evaluate(cfg: DictConfig) -> dict:
    require_ckpt(cfg, "genzoo-eval")
    refuse_run_overrides(cfg, "genzoo-eval")
    check_config(cfg, "genzoo-eval")
    ckpt, evaluated = find_run_checkpoint(str(cfg.ckpt))
    with hold_run_folder(evaluated, "genzoo-eval"):  # it writes into the run's evals/
        return evaluate_run(cfg, ckpt, evaluated)


def evaluate_run(cfg: DictConfig, ckpt, evaluated) -> dict:
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
    record.update(fidelity.records)  # test/fidelity_protocol: what the numbers were measured with
    record.update(checkpoint=str(ckpt), evaluated_run=str(evaluated), extractor=cfg.fidelity.extractor,
                  n=cfg.fidelity.n or len(datamodule.splits["test"]), seed=cfg.seed)
    if trainer.is_global_zero:
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        for folder in (run_dir, evaluated / "evals" / run_dir.name):
            write_atomically(folder / "metrics.json", text)
    return record


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    run_hydra_app(hydra_main, "eval")


if __name__ == "__main__":
    main()
