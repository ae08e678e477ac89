"""One process per run folder, no run written into another's folder, and nothing left behind by a refused run.

* :func:`hold_run_folder`: an exclusive ``fcntl.flock`` on ``RUN/.lock``, held by ``genzoo-train`` (a resumed run
  too) for its whole life and by ``genzoo-eval`` while it evaluates a run and writes into its ``evals/``. The
  kernel drops the lock when the process ends, however it ends, so a ``kill -9`` leaves no stale lock to clean up;
  the file keeps the holder's pid, host and command for the sentence a second process gets.
* :func:`refuse_existing_run`: a new run never writes into a folder that holds a run (a ``hydra.run.dir`` pointed
  at one would overwrite its ``config.yaml`` and mix two runs in one ``metrics.jsonl``).
* :func:`check_can_make`: a folder that cannot be made (a file in the way, no permission) gets a sentence.
* :func:`discard_fresh_folder`: Hydra makes the run folder before genzoo sees the config, so a config that genzoo
  refuses would leave a folder holding only Hydra's files. It is removed again.

Only the process of global rank zero takes the lock and checks folders: the other DDP ranks run in the same folder.
On a system without ``fcntl`` (Windows) the lock is skipped.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genzoo.errors import GenzooError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = ".lock"
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "env.json")  # what makes a folder a run's
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # Lightning's, in its order


def process_rank() -> int:
    """The global rank Lightning will give this process, read from the same variables before Lightning starts."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def holds_run(folder: Path) -> str | None:
    """The file that makes ``folder`` a run's folder, or None."""
    return next((name for name in RUN_FILES if (folder / name).exists()), None)


@contextmanager
def hold_run_folder(run_dir: Path, what: str) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block, or stop with one sentence naming the process that has it.
    ``what``: the script, for that sentence (e.g. 'genzoo-train')."""
    if fcntl is None or process_rank() != 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = describe_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise GenzooError(f"{run_dir} is in use by {holder}, and a run folder takes one process at a time: wait "
                          f"for that process to end (or stop it), then run {what} again.") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "script": what,
                                 "command": " ".join(sys.argv), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")
                                 }).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return f"{info['script']} (pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def refuse_existing_run(run_dir: Path) -> None:
    """A new run (not ``resume=``) in a folder that holds a run stops here, before it writes anything."""
    found = holds_run(run_dir)
    if found is not None and process_rank() == 0:
        raise GenzooError(f"{run_dir} already holds a run (its {found}), and a new run never writes into another "
                          f"run's folder: leave hydra.run.dir unset so the run gets a fresh folder, or continue "
                          f"that run with resume={run_dir}.")


def check_can_make(folder: Path, key: str) -> None:
    """Stop with one sentence when ``folder`` cannot be made: a file in the way, or no permission to write."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    fix = f"point {key} at a folder you can write"
    if ancestor.exists() and not ancestor.is_dir():
        raise GenzooError(f"{folder} cannot be made because {ancestor} is a file, not a folder: {fix}.")
    if folder.exists():
        return
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise GenzooError(f"{folder} cannot be made because {ancestor} cannot be written (no permission, or a "
                          f"read-only file system): {fix}.")


def leaves_no_folder_when_refused(task: Callable) -> Callable:
    """Wrap a Hydra task so that, when it fails before writing a file of its own, the folder Hydra made for it goes
    again (see :func:`discard_fresh_folder`)."""

    @functools.wraps(task)
    def wrapped(cfg, *args, **kwargs):
        from hydra.core.hydra_config import HydraConfig

        hydra_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
        try:
            return task(cfg, *args, **kwargs)
        except BaseException:
            if hydra_dir is not None:
                discard_fresh_folder(hydra_dir, HydraConfig.get().job.name)
            raise

    return wrapped


def discard_fresh_folder(run_dir: Path, job_name: str) -> None:
    """Remove a run folder that holds nothing but what Hydra wrote into it (``.hydra/``, ``{job}.log``) and the
    lock: the folder of a run that was refused before it wrote a file of its own. Anything else keeps it all."""
    if not run_dir.is_dir() or process_rank() != 0:
        return
    ours = {".hydra", f"{job_name}.log", LOCK}
    if {p.name for p in run_dir.iterdir()} - ours:
        return
    shutil.rmtree(run_dir, ignore_errors=True)

