"""Loggers from ``cfg.logger``: W&B (online when credentials exist, else offline, never a prompt), CSV,
TensorBoard, or none. Every logger writes into the run folder."""

from __future__ import annotations

import csv
import io
import netrc
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from genzoo.errors import GenzooError
from genzoo.runs import write_atomically

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials() -> bool:
    """True when W&B has an API key: the environment or a ~/.netrc entry, as ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str) -> str:
    if requested not in WANDB_MODES:
        raise GenzooError(f"logger.wandb.mode={requested!r} is unknown: use one of {', '.join(WANDB_MODES)}.")
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled", "dryrun"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    return "online" if wandb_credentials() else "offline"


def sweep_group_and_name(run_dir: Path) -> tuple[str | None, str]:
    """In a multirun: (the sweep folder's name, the job's overrides); in a single run: (None, folder name)."""
    if not HydraConfig.initialized():
        return None, run_dir.name
    hc = HydraConfig.get()
    overrides = hc.job.override_dirname or run_dir.name
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name, overrides
    return None, overrides


def _step(row: dict) -> int | None:
    try:
        return int(float(row["step"]))
    except (KeyError, TypeError, ValueError):
        return None


def _filled(row: dict) -> set[str]:
    """The metrics a CSV row holds (Lightning adds ``step`` and ``epoch`` to every row, so they say nothing)."""
    return {k for k, v in row.items() if v not in (None, "") and k not in ("step", "epoch")}


class ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it continues an existing ``metrics.csv`` instead of deleting it.

    A resumed run reopens its run folder's ``csv/``; Lightning's writer would delete the history there. This one
    keeps it and, at its first write, drops the rows the interrupted process logged after the step this process
    starts logging at (that work is trained again and logged again), and the rows at that very step that hold a
    metric this process logs there too, so the file ends with one value per metric and step. Rewrites are atomic: a
    kill never leaves half a history.
    """

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict] | None = None  # the interrupted process's rows, while some may still go
        self._since: list[dict] = []  # rows this process appended after them, while at its first step
        self._first_step: int | None = None
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            text = f.read()
        if text and not text.endswith("\n"):  # a kill while appending left half a row: it is logged again
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        self.metrics_keys = sorted(reader.fieldnames or [])
        self._earlier = [row for row in reader if _step(row) is not None]

    def _write_all(self, rows: list[dict], fieldnames: list[str]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(Path(self.metrics_file_path), out.getvalue())

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._write_all(rows, fieldnames)

    def save(self) -> None:
        if self.metrics and self._earlier is not None:
            steps = [int(m["step"]) for m in self.metrics]
            if self._first_step is None:
                self._first_step = min(steps)
            first = self._first_step
            again = set().union(*(_filled(m) for m in self.metrics if int(m["step"]) == first))
            kept = [row for row in self._earlier
                    if _step(row) < first or (_step(row) == first and not _filled(row) & again)]
            if len(kept) != len(self._earlier) or not Path(self.metrics_file_path).is_file():
                self._write_all(kept + self._since, self.metrics_keys)
            if max(steps) == first:  # more of this step may come: remember what the file holds after the history
                self._earlier, self._since = kept, self._since + list(self.metrics)
            else:  # past the first step nothing of the interrupted process is left to replace
                self._earlier, self._since = None, []
        super().save()


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` writing through :class:`ContinuingWriter`, so ``resume=`` keeps the run's CSV history."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    loggers = []
    for name, opts in (cfg.logger or {}).items():
        opts = OmegaConf.to_container(opts, resolve=True) if opts is not None else {}
        if name == "wandb":
            group, job_name = sweep_group_and_name(run_dir)
            loggers.append(WandbLogger(
                project=opts.get("project", "genzoo"), entity=opts.get("entity"),
                name=opts.get("name") or job_name, group=opts.get("group") or group, id=opts.get("id"),
                tags=opts.get("tags") or None, save_dir=str(run_dir), resume="allow",
                mode=wandb_mode(opts.get("mode", "auto")),
                config=OmegaConf.to_container(cfg, resolve=True),
            ))
        elif name == "csv":
            # every row on disk as soon as it is logged (a few rows per log_every_n_steps): a killed run keeps them
            opts.setdefault("flush_logs_every_n_steps", 1)
            loggers.append(ContinuingCSVLogger(save_dir=str(run_dir), name="csv", version="", **opts))
        elif name == "tensorboard":
            try:
                loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **opts))
            except ModuleNotFoundError as e:
                raise GenzooError("logger=tensorboard needs the tensorboard package: `pip install tensorboard`, "
                                  "or choose logger=csv.") from e
        else:
            raise GenzooError(f"logger.{name} is not a logger genzoo knows: use wandb, csv, tensorboard or none.")
    return loggers


def finish_wandb(failed: bool) -> None:
    """Close the global W&B run, so the next job of a multirun starts its own instead of logging into this one."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
