"""genzoo: train, evaluate and compare deep generative models of images with one command."""

import os

# torch's OpenMP threads spin while they wait for work. Alone on a machine that is fastest, but beside another busy
# process (a second job of a sweep) the spinning threads take the cores from the threads doing work: the default
# digits run fitted 7x slower beside a second one (benchmarks/threads.py). Waiting threads that sleep cost a little
# alone and keep the run fast when shared. OpenMP reads this once, when torch loads, and genzoo's entry points
# import this package first; a value the user set is kept (OMP_WAIT_POLICY=ACTIVE for a machine of its own).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from genzoo.errors import GenzooError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["GenzooError", "__version__"]
