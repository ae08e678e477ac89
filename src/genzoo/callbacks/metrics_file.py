"""The run folder's own record of metrics, whatever the logger: ``metrics.jsonl`` (one line per epoch) and
``metrics.json`` (the final values: last epoch, best checkpoint score, test metrics, wall time, and the records other
callbacks keep beside their numbers, such as the Fidelity callback's ``{stage}/fidelity_protocol``).

Times are the run's, not the process's: each checkpoint carries the wall time elapsed when it was written, and a
resumed process adds its own to that, so ``time_s`` and ``fit_time_s`` go on across resumes. Time an interrupted
process spent after its last checkpoint is not counted: that work is done again, and counted, after the resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from genzoo.files import write_atomically
from genzoo.run.folder import scalar_metrics
from genzoo.run.requeue import requeue_count


def _epoch(line: str) -> int | None:
    """The epoch of a metrics.jsonl line; None for a line a kill cut in half."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


class MetricsFile(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.start = time.time()
        self.before = 0.0  # seconds the run had taken up to the checkpoint this process resumed from
        self.restored: float | None = None  # the elapsed time of the checkpoint last restored
        self.final: dict = {}

    def elapsed(self) -> float:
        return round(self.before + time.time() - self.start, 3)

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores callback states whenever it loads a checkpoint, also to test the best one after
        # fitting: only a fit that resumes takes the time over, or the best checkpoint's time would count twice.
        self.restored = float(state_dict.get("elapsed_s", 0.0))

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.ckpt_path is not None and self.restored is not None:
            self.before = self.restored
        self.restored = None

    def _records(self, trainer: pl.Trainer, stage: str) -> None:
        """What callbacks keep beside their numbers (``records``: key → a JSON-able value), of ``stage``."""
        for callback in trainer.callbacks:
            self.final.update({k: v for k, v in getattr(callback, "records", {}).items() if k.startswith(stage)})

    def _write_final(self) -> None:
        write_atomically(self.dirpath / "metrics.json", json.dumps(self.final, indent=2, sort_keys=True) + "\n")

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        # A run killed after writing an epoch's line but before its checkpoint trains that epoch again on resume:
        # keep one line per epoch, the one the finished run will have written. (A requeued job whose first
        # process left no checkpoint starts at epoch 0 in the same folder: none of its lines is kept.)
        path = self.dirpath / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _epoch(line) is not None and _epoch(line) < trainer.current_epoch]
        if len(kept) != len(lines):
            write_atomically(path, "".join(kept))

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                "time_s": self.elapsed(), **scalar_metrics(trainer.callback_metrics)}
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.final.update(scalar_metrics(trainer.callback_metrics))
        self.final.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                          fit_time_s=self.elapsed(), requeues=requeue_count())
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_score is not None:
            self.final["best_score"] = float(ckpt.best_model_score)
            self.final["best_checkpoint"] = ckpt.best_model_path
        self._records(trainer, "val/")
        self._write_final()

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.final.update({k: v for k, v in scalar_metrics(trainer.callback_metrics).items()
                           if k.startswith(("test/", "probe/"))})  # the linear probe runs at test
        self._records(trainer, "test/")
        self.final["time_s"] = self.elapsed()
        self._write_final()
