"""The one exception a user's mistake raises.

It subclasses Hydra's ``CompactHydraException``: Hydra prints its message as one sentence without a traceback,
exits non-zero, and in a multirun records the job as failed and goes on with the next one.
"""

from hydra.errors import CompactHydraException


class GenzooError(CompactHydraException):
    """A mistake in the config, the data, a checkpoint or a path: the message names the cause and the fix."""
