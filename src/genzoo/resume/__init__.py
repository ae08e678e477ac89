"""Exact resume, in one place: a run killed at any moment continues with ``resume=RUN_DIR`` and ends with the
weights and metrics of a run that was never interrupted.

* ``config``: the saved config of the run, this command's overrides on top, the checkpoint to continue from;
* ``callbacks``: what Lightning's checkpoints leave out (RNG states, the loader's position, the one-cycle length,
  the step checkpoint resumed from);
* ``sampler``: the training order as a function of (seed, epoch), which a resumed run replays and skips into.

Models hold no resume code: their noise comes from the saved generators or from (seed, rank, step), and what they
fit from the data they fit in passes that a checkpoint never cuts (``genzoo.models``).
"""

from genzoo.resume.callbacks import resume_callbacks
from genzoo.resume.config import in_place_args, resumed_config, training_left

__all__ = ["in_place_args", "resume_callbacks", "resumed_config", "training_left"]
