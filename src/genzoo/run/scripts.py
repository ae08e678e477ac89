"""What the scripts check alike: the command line Hydra reads, and the arguments of the scripts that read a trained
run (``genzoo-eval``, ``genzoo-sample``)."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from genzoo.errors import GenzooError


def require_ckpt(cfg: DictConfig, script: str) -> None:
    """``ckpt`` is ``???`` in the YAML: read unset, OmegaConf would stop with a traceback naming no example."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise GenzooError(f"{script} needs ckpt=, the run to read: give a run folder or a .ckpt file, e.g. "
                          "ckpt=outputs/runs/<run>.")


def refuse_run_overrides(cfg: DictConfig, script: str) -> None:
    """Model and data are rebuilt from the run's own config.yaml (the weights fit no other model, and the scores
    are the run's), so a ``model`` or ``data`` node on the command line would be ignored, or fail to resolve."""
    touched = [key for key in ("model", "data") if key in cfg]
    if not touched:
        return
    override = touched[0]
    if HydraConfig.initialized():  # name the override as the user typed it
        for arg in HydraConfig.get().overrides.task:
            key = arg.split("=", 1)[0].lstrip("+~")
            if key.split("@", 1)[0].split(".", 1)[0] in touched:
                override = arg
                break
    raise GenzooError(f"{script} takes the model and data from the run's config.yaml, so '{override}' cannot "
                      "change them (another model, or other data, for a trained run is not supported): remove the "
                      "override, or train a run with the model and data you want.")


def run_hydra_app(app: Callable[[], Any], config_name: str,
                  rewrite: Callable[[list[str]], list[str]] | None = None) -> None:
    """Run a ``@hydra.main`` app after checking that Hydra can read every override on the command line (its
    parser's message names a grammar rule, not the fix) and that each sets a key the config has (Hydra's message
    for one it lacks is five lines); ``rewrite`` may add arguments first (``resume=``)."""
    message = unreadable_override(sys.argv[1:]) or unknown_key(config_name, sys.argv[1:])
    if message is not None:
        print(message, file=sys.stderr)
        sys.exit(2)
    if rewrite is not None:
        sys.argv[1:] = rewrite(sys.argv[1:])
    app()


def unreadable_override(args: list[str]) -> str | None:
    """One sentence for the first override Hydra's grammar cannot read, or that sweeps outside a multirun."""
    from hydra._internal.utils import get_args_parser  # Hydra's own command line: which arguments are overrides

    parsed, _ = get_args_parser().parse_known_args(args)
    parser = OverridesParser.create()
    for arg in parsed.overrides:
        key, _, value = arg.partition("=")
        quote = "'" if '"' in value else '"'
        quoted = f"{key}={quote}{value}{quote}"
        try:
            override = parser.parse_override(arg)
        except HydraException:  # the grammar's errors (OverrideParseException is one)
            return (f"Hydra cannot read the override {arg}: quote its value inside the argument, {quoted}, "
                    f"and the whole argument for the shell (quotes, brackets, braces, parentheses, '=', '#' and "
                    f"spaces in a value need it).")
        if override.is_sweep_override() and not parsed.multirun:
            return (f"The override {arg} lists several values, which only a sweep runs: add -m to run one job per "
                    f"value, or quote the value, {quoted}, if the commas belong to it.")
        group = override.key_or_group.lstrip("+~")
        choices = group_choices().get(group)
        if choices and not override.is_sweep_override() and not override.is_delete():
            choice = override.value()
            if choice is not None and str(choice) not in choices:
                return (f"{group}={choice} is not one of genzoo's {group} configs: choose one of "
                        f"{', '.join(sorted(choices))}.")
    return None


def group_choices() -> dict[str, set[str]]:
    """The config groups of genzoo's tree and the names of their YAML files (``model``: pixelcnn, vae, …)."""
    from importlib.resources import files

    root = files("genzoo.conf")
    return {d.name: {f.name[:-5] for f in d.iterdir() if f.name.endswith(".yaml")}
            for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))}


def unknown_key(config_name: str, args: list[str]) -> str | None:
    """One sentence for a plain ``key=value`` whose key the composed config lacks (Hydra wants ``+key=value``)."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser

    parsed, _ = get_args_parser().parse_known_args(args)
    if parsed.multirun or parsed.config_name or not parsed.overrides:
        return None
    try:
        with initialize_config_module("genzoo.conf", version_base="1.3"):
            compose(config_name, overrides=parsed.overrides)
        return None
    except Exception as e:  # noqa: BLE001 - anything else is Hydra's to report, in its own words
        match = re.search(r"Could not override '([^']+)'", str(e))
        if not match or "is not in struct" not in f"{e} {e.__cause__}":
            return None
    key = match.group(1)
    parent, _, name = key.rpartition(".")
    arg = next(a for a in parsed.overrides if a.startswith(key + "="))
    rest = [a for a in parsed.overrides if a != arg]
    try:
        with initialize_config_module("genzoo.conf", version_base="1.3"):
            node = OmegaConf.select(compose(config_name, overrides=rest), parent) if parent else None
        close = difflib.get_close_matches(name, list(node) if isinstance(node, DictConfig) else [], n=1)
    except Exception:  # noqa: BLE001 - the suggestion is a courtesy
        close = []
    hint = f" (did you mean {parent}.{close[0]}?)" if close else ""
    where = f"the {parent} config" if parent else "the config"
    return (f"{key} is not in {where}, so {arg} has nothing to override{hint}: check the spelling, or add the key "
            f"with +{arg} if {parent or 'the script'} takes it.")
