"""What the scripts check before Hydra starts: Hydra makes the run's folder, and writes into it, before genzoo
sees the config, and its own messages for a mistyped command line name a grammar rule or take five lines.

:func:`run_hydra_app` reads the command line as Hydra will (its argument parser and override grammar), composes
the config once as Hydra will, and stops with one sentence, before any folder exists, when

* an override cannot be parsed (say how to quote it), or lists several values outside a multirun;
* a config-group choice names no file of the group (``model=nope``);
* a plain ``key=value`` sets a key the config lacks (Hydra wants ``+key=value``);
* the run's (or sweep's) folder cannot be made there, or a new run would write into another run's folder;
* a launcher (``hydra/launcher=joblib``) whose Hydra plugin is not installed: the sentence names genzoo's extra;
* several processes started by ``torchrun`` or ``srun`` with no ``hydra.run.dir``: each would name its own folder.

Hydra's callbacks cannot stop a run (1.3 turns their exceptions into warnings), hence a step before the app.
Whatever this step cannot judge (a compose error of another kind, a folder name that needs Hydra's runtime) is
left to Hydra and to the scripts, which report it.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from genzoo.errors import GenzooError
from genzoo.run.guard import check_can_make, holds_run, refuse_existing_run
from genzoo.run.requeue import requeued_run

OUTPUT_KEY = "paths.output_dir (or GENZOO_OUTPUT_DIR)"
# hydra/launcher choices: the plugin module each needs and genzoo's extra that installs it (pinned in pyproject.toml)
LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "cluster"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
                    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "ray")}


def run_hydra_app(app: Callable[[], Any], config_name: str,
                  rewrite: Callable[[list[str]], list[str]] | None = None) -> None:
    """Run a ``@hydra.main`` app after the checks above; ``rewrite`` may add arguments first (``resume=``)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own command line: which arguments are overrides

    args = sys.argv[1:]
    parsed, _ = get_args_parser().parse_known_args(args)
    message = unreadable_override(parsed.overrides, parsed.multirun) or \
        separate_folders(parsed.overrides, parsed.multirun, dict(os.environ))
    if message is None:
        if rewrite is not None:
            args = sys.argv[1:] = rewrite(args)
            parsed, _ = get_args_parser().parse_known_args(args)
        try:
            message = composed_problem(config_name if parsed.config_name is None else parsed.config_name,
                                       parsed.overrides, parsed.multirun)
        except GenzooError as e:
            message = str(e)
    if message is not None:
        print(message, file=sys.stderr)
        sys.exit(2 if message.startswith(("Hydra cannot read", "The override")) else 1)
    register_launchers()
    app()


def register_launchers() -> None:
    """Hydra finds plugins by walking the ``hydra_plugins`` folders, which an editable install of genzoo does not
    have on disk (its packages are found by an import hook): register genzoo's launchers by hand."""
    from hydra.core.plugins import Plugins

    import hydra_plugins.genzoo_launcher as launchers

    for name in ("SubmititSlurm", "SubmititLocal"):
        if hasattr(launchers, name):  # defined when the submitit plugin is installed
            Plugins.instance().register(getattr(launchers, name))


def unreadable_override(overrides: list[str], multirun: bool) -> str | None:
    """One sentence for the first override Hydra's grammar cannot read, that sweeps outside a multirun, or that
    chooses a file a config group does not have."""
    parser = OverridesParser.create()
    choices = group_choices()
    for arg in overrides:
        key, _, value = arg.partition("=")
        quote = "'" if '"' in value else '"'
        quoted = f"{key}={quote}{value}{quote}"
        try:
            override = parser.parse_override(arg)
        except HydraException:  # the grammar's errors (OverrideParseException is one)
            return (f"Hydra cannot read the override {arg}: quote its value inside the argument, {quoted}, "
                    f"and the whole argument for the shell (quotes, brackets, braces, parentheses, '=', '#' and "
                    f"spaces in a value need it).")
        if override.is_sweep_override() and not multirun:
            return (f"The override {arg} lists several values, which only a sweep runs: add -m to run one job per "
                    f"value, or quote the value, {quoted}, if the commas belong to it.")
        group = override.key_or_group
        if group == "hydra/launcher" and not override.is_sweep_override() and not override.is_delete():
            message = missing_launcher(str(override.value()))
            if message is not None:
                return message
        if group in choices and not override.is_sweep_override() and not override.is_delete():
            choice = override.value()
            if choice is not None and str(choice) not in choices[group]:
                return (f"{group}={choice} is not one of genzoo's {group} configs: choose one of "
                        f"{', '.join(sorted(choices[group]))}.")
    return None


def missing_launcher(choice: str) -> str | None:
    """The sentence for a launcher whose Hydra plugin is not installed."""
    if choice not in LAUNCHER_PLUGINS:
        return None
    module, extra = LAUNCHER_PLUGINS[choice]
    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"hydra/launcher={choice} needs Hydra's {choice.split('_')[0]} launcher plugin ({module}), which is "
            f"not installed: pip install -e '.[{extra}]' in genzoo's checkout (or pip install 'genzoo[{extra}]').")


def separate_folders(overrides: list[str], multirun: bool, environ: dict) -> str | None:
    """Processes of one run started by torchrun or srun each compose the config, so each would name a folder by
    its own clock and random suffix: they need the one folder from the command line."""
    world = environ.get("WORLD_SIZE") if environ.get("TORCHELASTIC_RUN_ID") else None
    if world is None and "SUBMITIT_EXECUTOR" not in environ and environ.get("SLURM_STEP_ID") is not None:
        world = environ.get("SLURM_NTASKS")  # srun inside an allocation (submitit's jobs fix their folder)
    if multirun or not (world or "").isdigit() or int(world) < 2:
        return None
    if any(a.startswith(("hydra.run.dir=", "resume=")) for a in overrides):
        return None
    launcher = "torchrun" if environ.get("TORCHELASTIC_RUN_ID") else "srun"
    return (f"{launcher} started {world} processes that would each make a run folder of their own: give them one, "
            f"hydra.run.dir=outputs/runs/NAME (e.g. NAME=$SLURM_JOB_ID, or a date the shell writes once).")


def group_choices() -> dict[str, set[str]]:
    """The config groups of genzoo's tree and the names of their YAML files (``model``: pixelcnn, vae, …)."""
    root = files("genzoo.conf")
    return {d.name: {f.name[:-5] for f in d.iterdir() if f.name.endswith(".yaml")}
            for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))}


def composed_problem(config_name: str, overrides: list[str], multirun: bool) -> str | None:
    """Compose as Hydra will (a sweep's first job stands for all), then check the keys and the folder."""
    from hydra import compose, initialize_config_module

    parser = OverridesParser.create()
    plain = [a for a in overrides if not parser.parse_override(a).is_sweep_override()]
    resume = any(a.startswith("resume=") for a in overrides)
    try:
        with initialize_config_module("genzoo.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=plain, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - anything but a missing key is Hydra's to report, in its own words
        match = re.search(r"Could not override '([^']+)'", str(e))
        if match and "is not in struct" in f"{e} {e.__cause__}" and not resume:
            return missing_key(config_name, match.group(1), plain)
        return None
    multirun = multirun or str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    try:
        folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)).absolute()
    except Exception:  # noqa: BLE001 - a name that needs Hydra's runtime: Hydra makes it, train() checks it
        return None
    check_can_make(folder, OUTPUT_KEY)
    if multirun and folder.is_dir():
        runs = sorted(p.name for p in folder.iterdir() if p.is_dir() and holds_run(p))
        if runs:
            return (f"{folder} already holds the runs of a sweep ({', '.join(runs[:3])}{' …' if len(runs) > 3 else ''})"
                    f", and a new sweep never writes into another's folder: leave hydra.sweep.dir unset so the sweep "
                    f"gets a fresh folder.")
    if not multirun and not resume and not requeued_run(folder):  # a requeued job continues its run
        refuse_existing_run(folder)
    return None


def missing_key(config_name: str, key: str, overrides: list[str]) -> str:
    """The sentence for ``key=value`` whose key the config lacks, with the nearest key of its node."""
    from hydra import compose, initialize_config_module

    parent, _, name = key.rpartition(".")
    arg = next(a for a in overrides if a.startswith(key + "="))
    try:
        with initialize_config_module("genzoo.conf", version_base="1.3"):
            node = OmegaConf.select(compose(config_name, overrides=[a for a in overrides if a != arg]), parent) \
                if parent else None
        close = difflib.get_close_matches(name, list(node) if isinstance(node, DictConfig) else [], n=1)
    except Exception:  # noqa: BLE001 - the suggestion is a courtesy
        close = []
    hint = f" (did you mean {parent}.{close[0]}?)" if close else ""
    where = f"the {parent} config" if parent else "the config"
    return (f"{key} is not in {where}, so {arg} has nothing to override{hint}: check the spelling, or add the key "
            f"with +{arg} if {parent or 'the script'} takes it.")
