"""One GPU per job when several jobs of a sweep run at once on one machine (``hydra/launcher=joblib``).

The joblib launcher starts jobs in worker processes that it reuses, and hands out no devices. A job number modulo
the GPUs would put two running jobs on one GPU as soon as jobs end out of order (job 2 starts on GPU 0 while job
0 still runs there), so a job *claims* a GPU instead: it takes an exclusive ``fcntl.flock`` on
``SWEEP/.gpus/K.lock`` for the first free K, trying ``num mod G, num+1 mod G, …`` (so, when jobs run in order, job
``num`` gets GPU ``num mod G`` as one would expect), holds it for its whole run and lets go when it ends (the kernel
drops it with a killed process too). With more jobs at once than GPUs, a job that finds none free shares GPU
``num mod G``, and says so. The trainer gets ``devices=[K]``, an index among the visible GPUs
(``CUDA_VISIBLE_DEVICES``), which a reused worker process can change from job to job, unlike
``CUDA_VISIBLE_DEVICES`` itself once CUDA has started.

The submitit and Ray launchers give each job its own GPUs (``gpus_per_node``, ``num_gpus``), so only joblib needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)


def gpu_order(job_num: int, n_gpus: int) -> list[int]:
    """The GPUs a job tries, in order: its own (number mod GPUs) first, then the next ones around."""
    return [(job_num + i) % n_gpus for i in range(n_gpus)]


@contextmanager
def claim_gpu(lock_dir: Path, job_num: int, n_gpus: int) -> Iterator[int]:
    """Hold the first free GPU of :func:`gpu_order` for the ``with`` block; its index among the visible GPUs."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for k in gpu_order(job_num, n_gpus):
        fd = os.open(lock_dir / f"{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            yield k
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    k = job_num % n_gpus
    log.warning("Job %d finds all %d GPUs taken by other jobs of the sweep and shares GPU %d: give the launcher "
                "hydra.launcher.n_jobs=%d or fewer for one job per GPU.", job_num, n_gpus, k, n_gpus)
    yield k


def needs_own_gpu(cfg: DictConfig, launcher_target: str, n_gpus: int) -> bool:
    """A job of a joblib sweep on a machine with several GPUs whose trainer asks for one GPU."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return ("joblib" in launcher_target and n_gpus > 1 and accelerator in ("gpu", "cuda", "auto")
            and str(devices) in ("1", "auto"))


@contextmanager
def job_devices(cfg: DictConfig) -> Iterator[list[int] | None]:
    """``devices`` for this job's trainer (``[K]``), held for the ``with`` block, or None to keep the config's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if fcntl is None or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield None
        return
    import torch

    hc = HydraConfig.get()
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not needs_own_gpu(cfg, str(hc.launcher.get("_target_", "")), n_gpus):
        yield None
        return
    with claim_gpu(Path(hc.sweep.dir) / ".gpus", int(hc.job.num), n_gpus) as k:
        yield [k]
