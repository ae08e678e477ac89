"""Networks (plain ``nn.Module``s), apart from the LightningModules that train them.

A network's hyper-parameters are its own keyword arguments, with their defaults, and nowhere else: a model's YAML
sets them in a node of plain options (``model.net``; the DCGAN's ``model.generator`` and ``model.discriminator``)
and the model passes that node through ``build_network`` together with what it knows itself (the data's channels
and levels, the code size). The node has no ``_target_``: the model names its network class, so a config can
change a network's options but never swap in another module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from genzoo.errors import GenzooError
from genzoo.schema import check_options


def network_options(network: Callable, *given: str) -> list[str]:
    """The keyword arguments of ``network`` (a network class, or a function making networks) a config may set, in
    signature order: every named parameter except ``given``, the ones the model fills in itself."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(network).parameters.values() if p.kind in kinds and p.name not in given]


def build_network(network: Callable, options: Mapping[str, Any] | None, key: str = "model.net", **given: Any) -> Any:
    """``network(**given, **options)``, all by keyword, after checking the option names against its signature.

    ``options``: the config node ``key`` (None: all defaults). ``given``: what the model passes from the data and
    its own arguments (``data_channels``, ``levels``, ``z_dim`` …); a config cannot set those. A name the
    signature lacks is the user's mistake, so it raises a GenzooError naming the key and the accepted options
    instead of Python's TypeError about an unexpected keyword argument; so does a value of the wrong type or
    range (``genzoo.schema``), instead of a layer's error from deep inside the constructor.
    """
    options = dict(options or {})
    accepted = network_options(network, *given)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        keys = ", ".join(f"{key}.{name}" for name in unknown)
        verb = "is not an option" if len(unknown) == 1 else "are not options"
        raise GenzooError(f"{keys} {verb} of {network.__name__}: use one of {', '.join(accepted)}.")
    check_options(network, options, key)
    return network(**given, **options)
