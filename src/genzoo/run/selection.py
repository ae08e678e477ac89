"""Model selection by a sample-quality metric: a GAN's best checkpoint is the epoch of its lowest ``val/fid``.

A model without a likelihood names a metric of the ``Fidelity`` callback as its ``monitor`` (``val/fid``). That
metric exists only on the epochs the callback computes it, every ``callbacks.fidelity.every_n_epochs``, while
Lightning's ``ModelCheckpoint`` raises when its monitor was never logged once validation has run, and on the epochs
in between would compare a stale value. So the best checkpoint is judged on exactly those epochs:

* ``callbacks.fidelity.every_n_epochs: null`` becomes 1 when the monitor is a fidelity metric, else 0 (test only);
* ``callbacks.checkpoint.every_n_epochs: null`` becomes the fidelity's period; a period set by hand must be a
  multiple of it (one sentence otherwise);
* a fidelity monitor with the callback off (``callbacks.fidelity=null`` or ``every_n_epochs=0``) keeps the last
  epoch's weights as a model with ``monitor: null`` does, and says so in one warning line: a search then gets no
  value from the run and records the trial as failed rather than optimising nothing.

The values are written into the config before ``config.yaml`` is, so the run folder says what was done.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, open_dict

from genzoo.errors import GenzooError
from genzoo.evaluation.protocol import is_fidelity_metric

log = logging.getLogger(__name__)


def is_fidelity_monitor(monitor) -> bool:
    return isinstance(monitor, str) and monitor.startswith("val/") and is_fidelity_metric(monitor)


def settle_selection(cfg: DictConfig) -> None:
    """Fill in the fidelity's and the checkpoint's periods (see the module); raise on a period that cannot work."""
    callbacks = cfg.get("callbacks") or {}
    fidelity, checkpoint = callbacks.get("fidelity"), callbacks.get("checkpoint")
    monitor = cfg.model.get("monitor")
    by_fidelity = is_fidelity_monitor(monitor)
    if fidelity is not None and fidelity.get("every_n_epochs") is None:
        with open_dict(fidelity):
            fidelity.every_n_epochs = 1 if by_fidelity else 0
    if not by_fidelity:
        return
    period = int(fidelity.every_n_epochs) if fidelity is not None else 0
    if period == 0:
        why = "callbacks.fidelity is off" if fidelity is None else "callbacks.fidelity.every_n_epochs=0"
        log.warning("model.monitor=%s is computed by the Fidelity callback at validation and %s, so the checkpoints "
                    "keep the last epoch (as with model.monitor=null): set callbacks.fidelity.every_n_epochs=N to "
                    "choose the best epoch.", monitor, why)
        cfg.model.monitor = None
        return
    if checkpoint is None:
        return
    every = checkpoint.get("every_n_epochs")
    if every is None:
        with open_dict(checkpoint):
            checkpoint.every_n_epochs = period
    elif int(every) == 0 or int(every) % period:
        raise GenzooError(f"callbacks.checkpoint.every_n_epochs={every} is not a multiple of "
                          f"callbacks.fidelity.every_n_epochs={period}, so the best checkpoint by {monitor} would be "
                          "judged on epochs without it: leave callbacks.checkpoint.every_n_epochs=null (it follows "
                          "the fidelity's period) or give a multiple of it.")
