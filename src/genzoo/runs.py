"""The run folder: the resolved config, the environment, and finding a run again to resume it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from genzoo.errors import GenzooError

PACKAGES = ["genzoo", "torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "wandb",
            "torchmetrics", "torch-fidelity", "scikit-learn", "numpy"]


def git_commit() -> str | None:
    """The commit of genzoo's source tree when it is a git checkout (an editable install), else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                           text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "git_commit": git_commit(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": versions,
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it over ``path``: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_run_files(run_dir: Path, cfg: DictConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "env.json").write_text(json.dumps(environment(), indent=2) + "\n")


def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A genzoo checkpoint read with ``weights_only=True``; one sentence when it is truncated, corrupt or foreign.

    ``mmap``: only check that it reads (tensors stay on disk), as ``resume=`` does before training."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing to the user
        raise GenzooError(f"{path} is not a readable checkpoint ({type(e).__name__}: it is truncated, corrupt or "
                          "not a Lightning checkpoint): use another file in its checkpoints/ folder, or start a new "
                          "run.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise GenzooError(f"{path} holds no model weights (no 'state_dict'): give a checkpoint written by "
                          "genzoo-train.")
    return ckpt


def find_checkpoint(path: str | Path, arg: str = "resume", best: bool = False) -> tuple[Path, Path | None]:
    """(checkpoint, its run folder or None) for a run folder or a checkpoint file given to ``arg=``.

    In a run folder: the best checkpoint when ``best`` (``genzoo-eval``), otherwise, and where there is no best
    one, the newer of the end-of-epoch and the every-N-steps checkpoint (where a killed run continues)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        candidates = sorted(p.glob("checkpoints/best-*.ckpt")) if best else []
        candidates = candidates or [c for c in [p / "checkpoints" / "last.ckpt", *p.glob("checkpoints/step*.ckpt")]
                                    if c.is_file()]
        if not candidates:
            raise GenzooError(f"{arg}={path} is a folder without checkpoints/last.ckpt: give a genzoo run folder "
                              "that has saved a checkpoint, or the path of a .ckpt file.")
        return max(candidates, key=lambda c: c.stat().st_mtime_ns), p
    if not p.is_file():
        raise GenzooError(f"{arg}={path} does not exist: give a genzoo run folder or a .ckpt file.")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
    if run_dir is not None and not (run_dir / "config.yaml").is_file():
        run_dir = None
    return p, run_dir


def start_process(cfg: DictConfig) -> DictConfig:
    """Set torch's threads and every seed from ``cfg``; return the trainer's config without genzoo's own keys."""
    import pytorch_lightning as pl
    import torch

    trainer_cfg = cfg.trainer.copy()
    with open_dict(trainer_cfg):
        threads = trainer_cfg.pop("torch_threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return trainer_cfg


def open_run(cfg: DictConfig) -> tuple[Path, list]:
    """Give the W&B run its id, resolve the config, write ``config.yaml`` and ``env.json`` (rank zero only) and
    build the loggers: (run folder, loggers)."""
    import secrets

    from pytorch_lightning.utilities import rank_zero_only

    from genzoo.loggers import build_loggers

    if "wandb" in (cfg.logger or {}) and cfg.logger.wandb.get("id") is None:
        cfg.logger.wandb.id = secrets.token_hex(4)  # saved in config.yaml, so resume= continues this W&B run
    OmegaConf.resolve(cfg)
    run_dir = Path(cfg.paths.run_dir)
    if rank_zero_only.rank == 0:
        write_run_files(run_dir, cfg)
    return run_dir, build_loggers(cfg, run_dir)
