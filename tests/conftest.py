"""Shared fixtures: run genzoo's installed console scripts as a user would, offline, from a temporary folder."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# In-process tests never reach W&B's servers either.
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)

BIN = Path(sys.executable).parent  # the console scripts installed beside this interpreter


@dataclass
class CliRun:
    """A finished command: its exit status, its output and the folders it was pointed at."""

    args: list[str]
    workdir: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def output_dir(self) -> Path:
        return self.workdir / "outputs"

    def run_dirs(self) -> list[Path]:
        """Folders of single runs (``outputs/runs/*``) that hold a genzoo config.yaml, oldest first."""
        return sorted(p.parent for p in self.output_dir.glob("runs/*/config.yaml"))

    def run_dir(self) -> Path:
        dirs = self.run_dirs()
        assert len(dirs) == 1, f"expected one run folder, found {dirs}\n{self.tail()}"
        return dirs[0]

    def tail(self, n: int = 4000) -> str:
        return f"$ {' '.join(self.args)}\n(exit {self.returncode})\n{self.output[-n:]}"


class GenzooCli:
    """Runs ``genzoo-train`` (or ``python -m genzoo.train``) with W&B offline and every path inside ``workdir``."""

    def env(self, workdir: Path, extra_env: dict[str, str | None] | None = None) -> dict[str, str]:
        """The scripts' environment; ``extra_env`` sets variables last, and a None value removes one."""
        env = {k: v for k, v in os.environ.items()  # WANDB_SERVICE: a wandb-core of this process, not theirs
               if k not in ("WANDB_API_KEY", "HYDRA_FULL_ERROR", "WANDB_SERVICE") and not k.startswith("GENZOO_")}
        home = workdir / ".wandb-home"
        # one torch thread per process: on a busy 2-core machine, two spinning OpenMP threads make a run 3× slower
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.update(WANDB_MODE="offline", WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
                   WANDB_DATA_DIR=str(home / "data"))
        for key, value in (extra_env or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def train(self, *overrides: str, workdir: Path, module: bool = False, timeout: float = 600,
              extra_env: dict[str, str | None] | None = None, process: bool = False) -> CliRun:
        """``process``: a real process even where one is not needed (see ``run``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "genzoo.train"] if module else [str(BIN / "genzoo-train")]
        # Outputs go to the default, ``outputs/`` in the folder the command starts in: every run and sweep here
        # checks that default too (a multirun once could not resolve it).
        command += [*overrides, f"paths.data_dir={workdir / 'data'}", f"paths.cache_dir={workdir / 'cache'}"]
        return self.run(command, workdir, extra_env, process=process or module, timeout=timeout)

    def script(self, name: str, *overrides: str, workdir: Path, timeout: float = 600, process: bool = False) -> CliRun:
        """Runs another installed Hydra script (``genzoo-eval``, ``genzoo-sample``) with the same paths."""
        workdir.mkdir(parents=True, exist_ok=True)
        command = [str(BIN / name), *overrides, f"paths.data_dir={workdir / 'data'}",
                   f"paths.cache_dir={workdir / 'cache'}"]
        return self.run(command, workdir, None, process=process, timeout=timeout)

    def run(self, command: list[str], workdir: Path, extra_env, process: bool, timeout: float) -> CliRun:
        """The command as a process where one is needed — DDP (whose launcher starts the script again), a changed
        environment (W&B's reads it at import) — and otherwise through the script's ``main`` in this process, with
        the same environment, folder, arguments and exit code, which saves the imports (seconds a run)."""
        if process or extra_env or any("ddp" in arg for arg in command):
            out = subprocess.run(command, cwd=workdir, env=self.env(workdir, extra_env), capture_output=True,
                                 text=True, timeout=timeout)
            return CliRun(command, workdir, out.returncode, out.stdout, out.stderr)
        from inprocess import MAINS

        saved = dict(os.environ), sys.argv, os.getcwd(), torch.get_num_threads()
        stdout, stderr, code = io.StringIO(), io.StringIO(), 0
        try:
            os.environ.clear()
            os.environ.update(self.env(workdir))
            os.chdir(workdir)
            sys.argv = command
            torch.set_num_threads(1)
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                MAINS[Path(command[0]).name]()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(saved[0])
            sys.argv = saved[1]
            os.chdir(saved[2])
            torch.set_num_threads(saved[3])
        return CliRun(command, workdir, code, stdout.getvalue(), stderr.getvalue())

    def wandb_summary(self, wandb_run_dir: Path) -> dict:
        """State, config and latest metric values of an offline W&B run, read back from its ``.wandb`` file."""
        out = subprocess.run([str(BIN / "wandb"), "leet", "inspect", "--summary", "--json", str(wandb_run_dir)],
                             capture_output=True, text=True, timeout=120, check=True)
        return json.loads(out.stdout)

    def wandb_run_record(self, wandb_run_dir: Path) -> dict:
        """The run record of an offline W&B run: id, display name, group, project."""
        out = subprocess.run([str(BIN / "wandb"), "leet", "inspect", "--json", str(wandb_run_dir)],
                             capture_output=True, text=True, timeout=120, check=True)
        for line in out.stdout.splitlines():
            record = json.loads(line)
            if record.get("type") == "run":
                return record["run"]
        raise AssertionError(f"no run record in {wandb_run_dir}")


@pytest.fixture(scope="session")
def cli() -> GenzooCli:
    assert (BIN / "genzoo-train").is_file(), f"genzoo-train is not installed beside {sys.executable}"
    return GenzooCli()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensors: a second thread only adds synchronisation, and on a busy
    machine waits for a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
