"""Sweeps that survive a failing job: a Hydra callback that records every job of a multirun in the sweep folder
and ends the sweep non-zero, naming the jobs that failed.

What Hydra 1.3.8 does without it (checked with a three-job sweep whose first and last jobs raise a GenzooError):
the basic launcher runs every job of a batch, catching each job's exception into its ``JobReturn``; the basic
sweeper then re-raises the *first* failure, so later batches never start (``hydra.sweeper.max_batch_size``),
``on_multirun_end`` is never called, and only the first failed job is named. The Optuna sweeper tells the study
a failed trial is ``FAIL`` but stops the search at the end of the batch unless ``max_failure_rate`` allows it.

``SweepRecord`` (registered in ``conf/hydra/default.yaml``, so every multirun has it):
- writes ``sweep.json`` (every job: number, overrides, status, returned metric, run folder, host, the error's one
  sentence) and ``failed.txt`` (one line per failed job) in the sweep folder after each job, so a sweep that
  is killed still leaves its record;
- under the basic sweeper, marks a failed job's return as completed with no value once it is recorded, so the
  sweeper goes on with the other jobs and batches instead of re-raising;
- under other sweepers (Optuna) leaves the failure to the sweeper, which tells the study the trial failed;
- records a search's trial that returned no value (a model without ``monitor``) as failed, with the reason;
- at the end of the multirun raises ``SystemExit`` naming the failed jobs: Hydra's callback runner turns any
  ``Exception`` into a warning, and this is after the last job, so nothing else is cut short. When every trial
  of an in-memory search failed it does so after the last trial, before the Optuna sweeper's own traceback ("No
  trials are completed yet"); a stored study (``hydra.sweeper.storage``) is told every trial first, so there that
  traceback remains.

Parallel jobs (the joblib, submitit and Ray launchers). There ``on_job_end`` runs in the job's own process, on a
copy of this callback made when the sweep started, possibly on another machine and at the same moment as other
jobs; only ``on_multirun_end`` runs in the launching process. So no process holds the list of jobs: each job
writes its own record, ``.records/NUM.json``, atomically (a temporary file renamed over it: one writer per file,
and a rename is atomic on NFS too), and ``sweep.json`` and ``failed.txt`` are the merge of every record, rewritten
atomically by each job after its own and by the launching process at the end. A merge that lists the records,
writes ``sweep.json`` and lists them again until nothing new appeared needs no lock: the last writer's second
listing sees every record whose writer had finished its own, so two jobs ending in the same instant are both in
``sweep.json``. (An ``fcntl`` lock was the other choice; NFS mounted with ``nolock`` or ``local_lock`` ignores it
across machines, while the records stay correct without any.) On NFS a folder listing may lag by the client's
attribute cache: a ``sweep.json`` written in that window can miss a record for a while, and the next write, or
the final one, brings it in. A requeued job rewrites its own record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genzoo.files import write_atomically
from genzoo.run.guard import process_rank

log = logging.getLogger(__name__)

# Hydra's default sweeper, as its config names it (an internal module path; pinned by a test).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
RECORDS = ".records"  # one file per job in the sweep folder


def job_error(job_return: JobReturn) -> BaseException:
    """The exception a failed job raised. Hydra's public ``return_value`` prints its own message and re-raises it,
    so the value is read from the attribute it keeps it in (``_return_value`` since Hydra 1.1; pinned by a test)."""
    return job_return._return_value


def one_sentence(error: BaseException) -> str:
    """The user-facing line of an error: a GenzooError's own sentence, otherwise its type and first line."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, CompactHydraException):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def plain(value: Any) -> Any:
    """A JSON-friendly copy of a job's return value (a float, None, a tensor's item, or its repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)


class SweepRecord(Callback):
    """Records the jobs of a multirun in its sweep folder; the sweep exits non-zero when any job failed."""

    def __init__(self, continue_on_failure: bool = True) -> None:
        self.continue_on_failure = continue_on_failure
        self.sweep_dir: Path | None = None
        self.sweeper = ""
        self.n_trials: int | None = None
        self.jobs: list[dict] = []
        self.launcher_pid: int | None = None

    # ---- Hydra's callback hooks ------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolving the folder here caches its timestamp; Hydra copies that cache into every job's config, so the
        # jobs land in this same folder.
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        # An in-memory study ends with the process, so a search may stop after its last trial without telling it
        # the outcome; a stored one must hear of every trial.
        in_memory = OmegaConf.select(config, "hydra.sweeper.storage", default="stored") is None
        self.n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None) if in_memory else None
        self.jobs = []
        self.launcher_pid = os.getpid()  # a job run elsewhere holds a copy of this callback, made here

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.sweep_dir is None or process_rank() != 0:  # a single run: Hydra reports its failure itself;
            return  # a job of several SLURM tasks: its rank 0 records it
        job = {
            "num": int(OmegaConf.select(config, "hydra.job.num", default=len(self.jobs))),
            "overrides": list(job_return.overrides or []),
            "override_dirname": str(OmegaConf.select(config, "hydra.job.override_dirname", default="")),
            "run_dir": str(OmegaConf.select(config, "hydra.runtime.output_dir", default="")),
            "host": socket.gethostname(),
        }
        if job_return.status == JobStatus.FAILED:
            error = job_error(job_return)
            job.update(status="failed", value=None, error=one_sentence(error))
            if isinstance(error, CompactHydraException):
                log.error("Job #%d (%s) failed: %s", job["num"], job["override_dirname"], job["error"])
            else:  # a bug rather than a mistake in the config: keep its traceback in the job's log
                log.error("Job #%d (%s) failed:\n%s", job["num"], job["override_dirname"],
                          "".join(traceback.format_exception(error)))
            self.let_sweep_go_on(job_return)
        elif job_return.return_value is None and self.sweeper != BASIC_SWEEPER:
            # A search has nothing to optimise (Optuna tells the study the trial failed): say why.
            job.update(status="failed", value=None,
                       error="the job returned no metric to optimise: the model names no monitor, so set "
                             "model.monitor to a metric the run logs at validation (e.g. val/bpd).")
            log.error("Job #%d (%s) failed: %s", job["num"], job["override_dirname"], job["error"])
        else:
            job.update(status="completed", value=plain(job_return.return_value), error=None)
        self.record(job)
        all_failed = len(self.failed()) == len(self.jobs)
        in_launcher = os.getpid() == self.launcher_pid  # never end a parallel job's process from here
        if in_launcher and self.n_trials is not None and len(self.jobs) >= int(self.n_trials) and all_failed:
            # Every trial of an in-memory search failed: the Optuna sweeper would now fail with a traceback asking
            # the study for a best trial it does not have. This is the last job, so end here with the list instead.
            self.finish()

    def let_sweep_go_on(self, job_return: JobReturn) -> None:
        """The basic sweeper re-raises the first failure after the batch and stops the sweep; a failure recorded
        here is marked completed with no value, so it goes on with the remaining jobs."""
        if self.continue_on_failure and self.sweeper == BASIC_SWEEPER:
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is not None:
            self.finish()

    def finish(self) -> None:
        self.merge()
        failed = self.failed()
        sweep_dir, self.sweep_dir = self.sweep_dir, None
        if failed:
            names = ", ".join(f"#{j['num']} ({self.swept(j) or 'no overrides'})" for j in failed)
            # SystemExit, not an exception: Hydra's callback runner would turn an exception into a warning.
            raise SystemExit(f"{len(failed)} of {len(self.jobs)} sweep jobs failed, {names}: their errors are "
                             f"above and in {sweep_dir / 'failed.txt'}; fix the cause and rerun those jobs.")

    # ---- the record --------------------------------------------------------------------------------------------
    def swept(self, job: dict) -> str:
        """The job's overrides that not every job of the sweep shares: what names it among the others."""
        common = set.intersection(*(set(j["overrides"]) for j in self.jobs)) if len(self.jobs) > 1 else set()
        return " ".join(o for o in job["overrides"] if o not in common)

    def failed(self) -> list[dict]:
        return [j for j in self.jobs if j["status"] == "failed"]

    def record(self, job: dict) -> None:
        """Write this job's own record, then the merged ``sweep.json`` and ``failed.txt``."""
        assert self.sweep_dir is not None
        write_atomically(self.sweep_dir / RECORDS / f"{job['num']}.json", json.dumps(job, indent=2) + "\n")
        self.merge()

    def read_records(self) -> list[str]:
        """The names of the job records in the sweep folder, and ``self.jobs`` read from them in job order."""
        assert self.sweep_dir is not None
        folder = self.sweep_dir / RECORDS
        names = sorted((p.name for p in folder.glob("*.json")), key=lambda n: int(n.split(".")[0])) \
            if folder.is_dir() else []
        jobs = []
        for name in names:
            try:
                jobs.append(json.loads((folder / name).read_text()))
            except (OSError, ValueError):  # never half-written (renamed into place); unreadable is lost
                log.warning("The sweep record %s cannot be read and is left out of sweep.json.", folder / name)
        self.jobs = jobs
        return names

    def merge(self) -> None:
        """Rewrite ``sweep.json`` and ``failed.txt`` from every job's record until no new record appeared while
        writing them (see the module's docstring for why that needs no lock)."""
        names = self.read_records()
        for _ in range(100):
            self.write()
            again = self.read_records()
            if again == names:
                return
            names = again

    def write(self) -> None:
        assert self.sweep_dir is not None
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        record = {"sweeper": self.sweeper, "n_jobs": len(self.jobs), "n_failed": len(self.failed()),
                  "jobs": self.jobs}
        write_atomically(self.sweep_dir / "sweep.json", json.dumps(record, indent=2) + "\n")
        lines = [f"#{j['num']}\t{' '.join(j['overrides'])}\t{j['error']}" for j in self.failed()]
        failed_txt = self.sweep_dir / "failed.txt"
        if lines:
            write_atomically(failed_txt, "\n".join(lines) + "\n")
        else:
            failed_txt.unlink(missing_ok=True)  # another job may have removed it first
