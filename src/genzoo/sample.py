"""genzoo-sample: draw samples from a saved model.

    genzoo-sample ckpt=outputs/runs/2026-11-25_12-00-00_a1b2c3 n=64      # the run's best checkpoint
    genzoo-sample ckpt=path/to/last.ckpt n=1000 seed=3 device=cuda
    genzoo-sample ckpt=outputs/runs/<run> y=3                            # one class, from a conditional model

Writes ``samples.png`` (a grid, upscaled so small images stay legible) and ``samples.npz`` (``samples``: the
integer images ``(n, C, H, W)`` in 0…levels-1 as uint8, with ``levels``, ``seed`` and ``checkpoint``) into its own
folder, ``outputs/samples/…``. Samples are drawn in chunks exactly as the ``Fidelity`` callback draws them, so the
same seed and n give the images that were scored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from genzoo.callbacks.sample_grid import image_grid
from genzoo.errors import GenzooError
from genzoo.evaluation.features import sample_chunks
from genzoo.run.checkpoints import find_run_checkpoint, load_model
from genzoo.run.folder import write_run_files
from genzoo.run.command_line import run_hydra_app
from genzoo.run.guard import leaves_no_folder_when_refused
from genzoo.run.scripts import refuse_run_overrides, require_ckpt
from genzoo.schema import check_config

log = logging.getLogger(__name__)


@leaves_no_folder_when_refused
def draw(cfg: DictConfig) -> Path:
    require_ckpt(cfg, "genzoo-sample")
    refuse_run_overrides(cfg, "genzoo-sample")
    check_config(cfg, "genzoo-sample")
    n, batch_size, seed = cfg.n, cfg.batch_size, cfg.seed
    ckpt, run = find_run_checkpoint(str(cfg.ckpt))
    model = load_model(ckpt, OmegaConf.load(run / "config.yaml"))
    check_class(model, cfg.y)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise GenzooError(f"device={cfg.device} is not available here ({e}): use device=cpu or auto.") from None
    images, _ = sample_chunks(model, n, batch_size, seed, label=cfg.y)
    OmegaConf.resolve(cfg)
    out = Path(cfg.paths.run_dir)
    write_run_files(out, cfg)
    save_image(image_grid(images, model.levels, nrow=cfg.nrow), out / "samples.png")
    np.savez_compressed(out / "samples.npz", samples=images.numpy().astype(np.uint8 if model.levels <= 256 else
                                                                              np.int64),
                        levels=model.levels, seed=seed, checkpoint=str(ckpt), y=-1 if cfg.y is None else cfg.y)
    log.info("%d samples of %s: %s", len(images), ckpt, out)
    return out


def check_class(model, y: int | None) -> None:
    """``y`` names a class the model was trained to draw, or is None."""
    if y is None:
        return
    if not getattr(model, "conditional", False):
        raise GenzooError(f"y={y} asks for one class, but this model was trained without model.conditional=true "
                          "and draws no class on demand: leave y out, or train a conditional model.")
    if not 0 <= y < model.num_classes:
        raise GenzooError(f"y={y} is not a class of this model: use one of 0…{model.num_classes - 1}.")


@hydra.main(version_base="1.3", config_path="pkg://genzoo.conf", config_name="sample")
def hydra_main(cfg: DictConfig) -> None:
    draw(cfg)


def main() -> None:
    run_hydra_app(hydra_main, "sample")


if __name__ == "__main__":
    main()
