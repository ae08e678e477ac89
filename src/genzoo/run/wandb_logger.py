"""Lightning's ``WandbLogger`` that W&B cannot take down.

- Starting the run (the first ``experiment`` access, from ``log_hyperparams``): ``wandb.init`` waits at most
  ``init_timeout`` seconds (wandb's setting; its two account look-ups before that add at most 10 s). Where it fails
  anyway (a server that answers the probe of :mod:`genzoo.run.wandb_server` but rejects the key or cannot start the
  run), the logger starts the run offline with one warning line (in a fresh wandb-core: the old one keeps the
  failed run's id), or, where online was forced, stops with one sentence.
- Logging: ``wandb.log`` hands each record to the local wandb-core process, which writes it to the run's ``.wandb``
  file and uploads it in the background, so a server that stops answering mid-run does not make it wait
  (tests/test_wandb_faults.py pins this). What can fail is wandb-core itself (killed, crashed): then a log call
  raises, and this logger turns that into one warning line and logs nothing more to W&B; ``metrics.jsonl`` and
  ``samples/`` in the run folder still get everything.

Left out: only the logging calls genzoo and Lightning make are guarded (hyper-parameters, metrics, images, tables,
text); code that calls ``logger.experiment`` itself meets wandb's own errors. A forced online run that
``wandb.init`` refuses stops after ``config.yaml`` is written, since the run starts at ``log_config``.
"""

from __future__ import annotations

import functools
import logging

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from genzoo.errors import GenzooError
from genzoo.run.wandb_server import sync_hint

log = logging.getLogger(__name__)


def describe(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0].rstrip('.')}" if lines else type(error).__name__


def restart_wandb_core() -> None:
    """End wandb-core, so the next ``wandb.init`` starts a fresh one: the old one holds on to a run id that failed
    to start ("run ID … is in use") or has a broken connection."""
    import wandb

    try:
        wandb.teardown()
    except (Exception, SystemExit):  # wandb exits with wandb-core's status where that is not 0
        pass


def _until_lost(method):
    """``method``, or nothing once W&B has failed: a W&B error becomes one warning line instead of the run's end."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self._lost:
            return None
        try:
            return method(self, *args, **kwargs)
        except GenzooError:  # a forced online run that cannot start: the run must stop
            raise
        except Exception as e:
            self._lost = True
            log.warning(f"W&B stopped working ({describe(e)}), so the rest of this run is not logged to W&B; "
                        f"metrics.jsonl and samples/ in the run folder still get everything.")
            return None

    return call


class WandbLogger(LightningWandbLogger):
    """``refuse``: None to fall back to offline when ``wandb.init`` fails online, or (who forced online, the fix)
    to stop with one sentence instead."""

    def __init__(self, *args, refuse: tuple[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # wandb 0.31 warns that the setting has no effect
        self._refuse = refuse
        self._lost = False

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None and self._wandb_init.get("mode") == "online":
            try:
                return super().experiment
            except Exception as e:
                why = describe(e)
                if self._refuse is not None:
                    who, fix = self._refuse
                    raise GenzooError(f"{who} but W&B could not start the run online ({why}): check the W&B "
                                      f"server and your credentials (`wandb login --relogin`), raise "
                                      f"logger.wandb.init_timeout for a slow server, or {fix}.") from None
                hint = sync_hint(self._wandb_init.get("dir"), self._wandb_init.get("id"))
                log.warning(f"W&B could not start the run online ({why}), so it logs to W&B offline: upload it "
                            f"later with {hint}.")
                self._wandb_init["mode"] = "offline"
                restart_wandb_core()
        return super().experiment

    log_hyperparams = _until_lost(LightningWandbLogger.log_hyperparams)
    log_metrics = _until_lost(LightningWandbLogger.log_metrics)
    log_image = _until_lost(LightningWandbLogger.log_image)
    log_table = _until_lost(LightningWandbLogger.log_table)
    log_text = _until_lost(LightningWandbLogger.log_text)
