"""What a config may say, checked before anything is created: every option's name, type and range.

The schema of a node that names a ``_target_`` (each model, data module, trainer, logger and callback) is the
signature of the class or function it names: its parameters are the node's keys and their annotations the types,
so a new model brings its schema with its constructor and no second list of its options can drift from it. A class
whose ``__init__`` passes ``**kwargs`` on to its base takes the base's parameters too. Ranges are a property of
what an option means, not of the class it belongs to (a learning rate is positive wherever it appears), so they
live in one table here, keyed by the option's name. The nodes without a ``_target_`` — the top level of each script
and ``paths`` — have their keys listed below.

``check_config`` raises a ``GenzooError`` naming the key, the value and what is allowed for the first option that
breaks its schema, and logs one warning line for each value that is legal but almost certainly a mistake. It leaves
``model.net`` (and the DCGAN's networks) to ``genzoo.nn.build_network``, which checks those options against the
network's own signature with :func:`check_options` when the model is built, also before anything is created.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genzoo.errors import GenzooError

log = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1  # numpy's seeds, and so Lightning's seed_everything, stop here


@dataclass(frozen=True)
class Range:
    """low ≤ value ≤ high, or < where that end is open."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def allows(self, v: float) -> bool:
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def describe(self) -> str:
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.low_open else '≥'} {number(self.low)}")
        if self.high < math.inf:
            parts.append(f"{'<' if self.high_open else '≤'} {number(self.high)}")
        return " and ".join(parts)


POSITIVE, AT_LEAST_ONE, NON_NEGATIVE = Range(0, low_open=True), Range(1), Range(0)
FRACTION = Range(0, 1, high_open=True)  # a probability that must leave something: dropout, smoothing, decay
LIMIT = Range(-1)  # Lightning's -1: no limit

# What each option name means wherever it appears (model, network, data, trainer, callbacks).
RANGES: dict[str, Range] = {
    **dict.fromkeys(["lr", "eval_chunk_mb", "C"], POSITIVE),
    **dict.fromkeys(["weight_decay", "instance_noise", "beta", "gradient_clip_val", "num_workers", "num_classes",
                     "kl_warmup_steps", "every_n_epochs", "val_size", "test_size", "split_seed", "overfit_batches",
                     "limit_train_batches", "limit_val_batches", "limit_test_batches", "min_epochs", "min_steps",
                     "reload_dataloaders_every_n_epochs", "every_n_train_steps", "commitment", "restart_after",
                     "downsamplings", "resblocks", "gradient_penalty", "r1"],
                     NON_NEGATIVE),
    **dict.fromkeys(["batch_size", "eval_batch_size", "channels", "blocks", "layers", "hidden", "depth", "width",
                     "head_channels", "kernel_size", "first_kernel_size", "z_dim", "d_steps", "eval_samples",
                     "image_size", "n", "pairs", "steps", "grid", "max_iter", "kid_subsets", "isc_splits",
                     "log_every_n_steps", "check_val_every_n_epoch", "accumulate_grad_batches", "num_nodes",
                     "torch_threads", "nrow", "refresh_rate", "components", "resnets", "stride", "flow_steps",
                     "flow_hidden", "flow_context", "train_samples", "n_per_class",
                     "code_dim"], AT_LEAST_ONE),
    "codebook_size": Range(2),
    **dict.fromkeys(["dropout", "label_smoothing", "ema_decay", "beta1", "beta2", "val_fraction",
                     "test_fraction"], FRACTION),
    **dict.fromkeys(["max_epochs", "max_steps", "save_top_k", "num_sanity_val_steps"], LIMIT),
    "levels": Range(2),
    "seed": Range(0, SEED_MAX),
}

# Legal values that are almost certainly a slip: (option, test, why).
SUSPICIOUS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("lr", lambda v: v >= 1, "it is far above the learning rates these models train with (1e-5 … 1e-2), so the "
                             "run will likely diverge"),
    ("weight_decay", lambda v: v >= 1, "AdamW takes lr × weight_decay of every weight each step"),
    ("dropout", lambda v: v >= 0.8, "it drops most of every layer"),
    ("max_epochs", lambda v: v == 0, "it trains nothing"),
    ("max_steps", lambda v: v == 0, "it trains nothing"),
    ("limit_train_batches", lambda v: v == 0, "it trains nothing"),
    ("ema_decay", lambda v: v < 0.9, "it averages over fewer than 10 steps"),
    ("d_steps", lambda v: v > 10, "the generator then trains once in more than 10 discriminator steps"),
    ("num_workers", lambda v: v > (os.cpu_count() or 1), f"that is more worker processes than this machine's "
                                                          f"{os.cpu_count()} cores"),
]

# The nodes without a _target_: their keys and types.
TOP_LEVEL: dict[str, dict[str, Any]] = {
    "genzoo-train": {"task_name": str, "seed": int, "published": list | None, "reached": list | None,
                     "resume": str | None, "test": bool, "paths": dict, "data": dict, "model": dict,
                     "trainer": dict, "logger": dict | None, "callbacks": dict | None},
    "genzoo-eval": {"task_name": str, "ckpt": str, "seed": int, "paths": dict, "trainer": dict,
                    "logger": dict | None, "fidelity": dict},
    "genzoo-sample": {"task_name": str, "ckpt": str, "n": int, "seed": int, "batch_size": int,
                      "nrow": int | None, "device": str, "paths": dict, "y": int | None},
}
PATHS = {"data_dir": str, "cache_dir": str, "output_dir": str, "run_dir": str}
GENZOO_TRAINER_KEYS = {"torch_threads": int | None}  # popped by genzoo before the Trainer is built


def check_config(cfg: DictConfig, script: str) -> None:
    """Check ``cfg`` (the script's composed config, without Hydra's node) against its schema; see the module."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise GenzooError(f"The config cannot be resolved at {key} ({str(e).splitlines()[0]}): check the "
                          f"${{...}} references you set there.") from None
    check_keys(values, TOP_LEVEL[script], "", f"{script} option")
    check_keys(values.get("paths") or {}, PATHS, "paths.", "paths option")
    for group in ("model", "data", "trainer", "fidelity"):
        if isinstance(values.get(group), dict):
            check_target_node(values[group], group)
    for group in ("logger", "callbacks"):
        for name, node in (values.get(group) or {}).items():
            if isinstance(node, dict) and "_target_" in node:
                check_target_node(node, f"{group}.{name}")
            elif node is not None:
                raise GenzooError(f"{group}.{name} names no _target_, so genzoo cannot build it: give "
                                  f"{group}.{name}._target_ (a class), or remove it with ~{group}.{name}.")


def check_keys(values: Mapping, schema: Mapping[str, Any], prefix: str, what: str) -> None:
    for key, value in values.items():
        if key not in schema:
            raise GenzooError(f"{prefix}{key} is not a {what}{did_you_mean(key, schema)}: remove it (the options "
                              f"are {', '.join(schema)}).")
        check_value(f"{prefix}{key}", value, schema[key])


def check_target_node(node: Mapping, key: str) -> None:
    """A node that names a class or function: its keys against the parameters it accepts."""
    target = node["_target_"]
    try:
        module, name = str(target).rsplit(".", 1)
        obj = getattr(importlib.import_module(module), name)
    except (ValueError, ImportError, AttributeError) as e:
        raise GenzooError(f"{key}._target_={target} cannot be imported ({e}): check the name, or install the "
                          f"package that provides it.") from None
    params, open_ended = parameters(obj)
    if key == "trainer":
        params = {**params, **GENZOO_TRAINER_KEYS}
    for option, value in node.items():
        if option.startswith("_") and option.endswith("_"):  # Hydra's own: _target_, _partial_, _convert_ …
            continue
        if option not in params:
            if open_ended:
                continue
            raise GenzooError(f"{key}.{option} is not an option of {name}{did_you_mean(option, params)}: remove "
                              f"it (the options are {', '.join(params)}).")
        check_value(f"{key}.{option}", value, params[option])


def check_options(network: Callable, options: Mapping[str, Any], key: str) -> None:
    """Types and ranges of a network's options (``model.net`` …), whose names ``build_network`` has checked."""
    params, _ = parameters(network)
    for option, value in options.items():
        check_value(f"{key}.{option}", value, params.get(option, Any))


def parameters(obj: Callable) -> tuple[dict[str, Any], bool]:
    """({name: annotation}, whether it takes other keywords too) of a function or a class's constructor chain."""
    params: dict[str, Any] = {}
    chain = [c for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    for fn in chain:
        try:
            signature = inspect.signature(fn)
            hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
        except (TypeError, ValueError, NameError):
            return params, True
        var_keyword = False
        for p in signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_keyword = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in params:
                params[p.name] = hints.get(p.name, Any)
        if not var_keyword:
            return params, False
        if not fn.__module__.startswith("genzoo"):  # a library class that passes keywords on: accept them
            return params, True
    return params, True


def check_value(key: str, value: Any, annotation: Any) -> None:
    name = key.rsplit(".", 1)[-1]
    bound = RANGES.get(name)
    allowed = f"{describe(annotation)}{f' {bound.describe()}' if bound is not None else ''}"
    if not accepts(annotation, value):
        raise GenzooError(f"{key}={show(value)} is not allowed: {key} takes {allowed}.")
    if bound is not None and is_number(value) and not bound.allows(value):
        raise GenzooError(f"{key}={show(value)} is out of range: {key} takes {allowed}.")
    for option, test, why in SUSPICIOUS:
        if name == option and is_number(value) and test(value):
            log.warning("%s=%s is legal but most likely a mistake: %s.", key, show(value), why)


def number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (a plain value of a resolved config) fits ``annotation``; types genzoo cannot judge (a
    Lightning ``Strategy``, a ``timedelta``) accept anything and are left to the object that takes them."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return is_number(value)
    if annotation is str:
        return isinstance(value, str)
    cls = origin or annotation
    if not inspect.isclass(cls):
        return True
    if issubclass(cls, PurePath):
        return isinstance(value, str)
    if issubclass(cls, Mapping):
        return isinstance(value, dict)
    if issubclass(cls, Sequence) and not issubclass(cls, str):
        if not isinstance(value, list):
            return False
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return all(any(accepts(a, v) for a in items) for v in value) if items else True
    return True


def describe(annotation: Any) -> str:
    """An annotation in words: 'an integer', 'null or a number', "one of 'min', 'max'"."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        words = [describe(a) for a in args if a is not type(None) and typing.get_origin(a) is not typing.Literal]
        if literals:
            words.append("one of " + ", ".join(show(v) for v in literals))
        if "a number" in words and "an integer" in words:  # int | float: any number
            words.remove("an integer")
        return ("null or " if type(None) in args else "") + " or ".join(dict.fromkeys(words))
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in typing.get_args(annotation))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if annotation in names:
        return names[annotation]
    cls = origin or annotation
    if inspect.isclass(cls) and issubclass(cls, PurePath):
        return "a path"
    if inspect.isclass(cls) and issubclass(cls, Mapping):
        return "a mapping (key: value, …)"
    if inspect.isclass(cls) and issubclass(cls, Sequence):
        return "a list"
    return getattr(annotation, "__name__", str(annotation))


def show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else f"{value}"


def did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
