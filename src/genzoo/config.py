"""Building objects from the config, with one clear sentence when the config is wrong."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

import genzoo.conf  # noqa: F401 - registers the resolvers the config tree uses
from genzoo.errors import GenzooError


def build(node: DictConfig, what: str, **kwargs):
    """``hydra.utils.instantiate`` that turns a wrong option into a GenzooError naming ``what`` (e.g. 'model')."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, GenzooError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        if isinstance(cause, ImportError) and not str(cause).startswith("Error loading"):
            first = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            raise GenzooError(f"The {what} config's {target} needs a package that is not installed ({first}): "
                              f"install it, or choose another {what}.") from None
        detail = str(cause or e).strip().splitlines()[-1] if str(cause or e).strip() else type(cause).__name__
        raise GenzooError(
            f"The {what} config cannot build {target}: {detail.rstrip('.')}. Check the {what}.* options you set "
            f"(the YAML files under conf/{what}/ list the accepted ones)."
        ) from None
