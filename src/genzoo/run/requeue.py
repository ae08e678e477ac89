"""A job that a cluster stopped and started again continues its own run folder through the exact resume.

Two ways a job comes back, both told by the environment of the new process:

* submitit's checkpointing hook (genzoo's submitit launchers, ``hydra_plugins.genzoo_launcher``): on the time-limit or
  pre-emption signal the launcher resubmits its own call with a requeue count one higher, which the new process
  finds in ``GENZOO_REQUEUES``;
* SLURM's own requeue (``scontrol requeue``, or a pre-emption with ``--requeue``), which counts in
  ``SLURM_RESTART_COUNT``; a run started by ``sbatch``/``srun`` with a fixed ``hydra.run.dir`` comes back this way.

A requeued process whose run folder already holds a run continues it from its newest checkpoint (as
``resume=RUN_DIR`` would: the same weights and metrics as a run never stopped); where the earlier process died
before its first checkpoint, it starts the run again in the same folder. A run that had finished ends at once and
well. ``metrics.json`` counts the requeues (``requeues``). The one-process-per-folder lock
(:mod:`genzoo.run.guard`) makes a requeue that overlaps its predecessor stop with one sentence instead of mixing two
processes in one folder.

Left out: work done after the last checkpoint is done again (every ``callbacks.step_checkpoint.every_n_train_steps``
steps and every epoch end bound it); a run pre-empted while testing its best checkpoint comes back as finished, so
its ``metrics.json`` lacks the test metrics (rerun ``genzoo-eval ckpt=RUN_DIR``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from genzoo.files import write_atomically
from genzoo.run.guard import holds_run

REQUEUES = "GENZOO_REQUEUES"


def requeue_count(environ: dict | None = None) -> int:
    """How many times this job was requeued (0 for a job that runs for the first time)."""
    environ = os.environ if environ is None else environ
    counts = [environ.get(REQUEUES, ""), environ.get("SLURM_RESTART_COUNT", "")]
    return max((int(c) for c in counts if c.strip().isdigit()), default=0)


def requeued_run(run_dir: Path) -> bool:
    """True when this process is a requeued job and ``run_dir`` holds the run its earlier process started."""
    return requeue_count() > 0 and holds_run(run_dir) is not None


def has_checkpoint(run_dir: Path) -> bool:
    ckpts = run_dir / "checkpoints"
    return (ckpts / "last.ckpt").is_file() or any(ckpts.glob("step*.ckpt"))


def finished_run_result(run_dir: Path, monitor: str | None) -> float | None:
    """A finished run that comes back: count this requeue in its ``metrics.json`` and give the value the sweep
    records (the best checkpoint's score, as the first process returned it)."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    metrics["requeues"] = max(requeue_count(), int(metrics.get("requeues", 0)))
    write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    value = metrics.get("best_score", metrics.get(monitor) if monitor else None)
    return float(value) if isinstance(value, (int, float)) else None
