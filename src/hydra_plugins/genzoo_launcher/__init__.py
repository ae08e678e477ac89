"""genzoo's submitit launchers: Hydra's (``hydra-submitit-launcher``), with the requeue count handed to the job.

``hydra/launcher=submitit_slurm`` and ``submitit_local`` (``conf/hydra/launcher/``) name these classes; Hydra takes
launchers only from its ``hydra_plugins`` namespace, hence the package's place. Without the submitit plugin the
module defines nothing (Hydra imports every plugin module at start; the command line names the extra to install). On a job's
time limit or pre-emption submitit sends the job ``SIGUSR2`` (``signal_delay_s`` before the limit; submitit ≥ 1.5
uses USR2 by default, ``SUBMITIT_PREEMPT_SIGNAL`` changes it) and calls the launcher's ``checkpoint``, which
resubmits the same call; SLURM (``scontrol requeue``) or submitit's local controller then starts it again, at most
``max_num_timeout`` times for time limits. Here ``checkpoint`` also counts the requeue, and the new process reads
the count (``GENZOO_REQUEUES``), finds its run folder holding the run it started, and continues it through the
exact resume (:mod:`genzoo.run.requeue`).

Why submitit's hook and not Lightning's SLURM auto-requeue: the hook is submitit's own way for a Hydra job to come
back, it works the same with the local executor (so the tests exercise the SLURM code path on one machine), and the
job continues from genzoo's own checkpoints (the step checkpoint or ``last.ckpt``, whichever is newer, with the
loader's position and the RNG states), so nothing has to be written in the short time before the kill. Lightning's
auto-requeue would save its own ``hpc_ckpt`` from inside the signal handler and call ``scontrol requeue`` a second
time; it only listens when Lightning sees SLURM managing the tasks, and its ``SIGUSR1`` is not submitit's
``SIGUSR2``, but to leave no doubt the trainer's SLURM environment is built with ``auto_requeue=False`` under
submitit (``genzoo.run.process.cluster_plugins``).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from genzoo.run.requeue import REQUEUES

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # pip install -e '.[cluster]'
    LocalLauncher = SlurmLauncher = None


class Requeueing:
    """What genzoo adds to Hydra's submitit launchers: the requeue count travels with the resubmitted call."""

    requeues = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.environ[REQUEUES] = str(self.requeues)  # this job's own process: read by genzoo.run.requeue
        return super().__call__(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        again = copy.copy(self)
        again.requeues = self.requeues + 1
        return submitit.helpers.DelayedSubmission(again, *args, **kwargs)


if SlurmLauncher is not None:
    class SubmititSlurm(Requeueing, SlurmLauncher):
        """``hydra/launcher=submitit_slurm``."""

    class SubmititLocal(Requeueing, LocalLauncher):
        """``hydra/launcher=submitit_local``: the same code path as SLURM's, on this machine."""
