"""genzoo-report's reading of run folders: each folder becomes a :class:`Run`, or a :class:`LeftOut` with the one
line that says which file is damaged and how.

Every file the report uses goes through :func:`read_run` (and its one reader of bytes, :func:`_read_bytes`), so a
line a kill cut in half, an empty or unreadable file, bytes that are not UTF-8 or a link to nowhere names its cause
in the report's "Left out" list instead of stopping the report or entering the table with part of its numbers.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

SAMPLE_GRID = re.compile(r"^epoch_(\d+)\.png$")
SKIPPED = {".hydra", "wandb"}  # Hydra's copies of the config and W&B's files are not run folders
# Keys of metrics.json that hold numbers; the rest (best_checkpoint, genzoo-eval's checkpoint and extractor) is text.
NUMERIC_KEYS = {"epochs", "steps", "time_s", "fit_time_s", "best_score", "n", "seed", "requeues"}
NON_FINITE = {"nan", "inf", "-inf"}  # how genzoo.run.folder.scalar_metrics writes a diverged value
PROTOCOL = "/fidelity_protocol"  # a mapping beside a stage's fidelity numbers (genzoo.evaluation.protocol)


class Damaged(Exception):
    """Why a run folder cannot be read wholly: one line naming the file and what is wrong with it."""


@dataclass
class Run:
    path: Path
    config: dict
    final: dict | None  # None: no metrics.json, the run has not finished
    history: list[dict]
    overrides: list[str] | None
    grid: Path | None  # the latest samples/epoch_NNN.png, read whole

    @property
    def seed(self) -> int:
        return self.config["seed"]


@dataclass
class LeftOut:
    path: Path
    reason: str


def natural(name: str) -> list:
    """Sort key that puts run 10 after run 9."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def real(path) -> Path:
    """The path with every link followed; unlike Path.resolve, a loop of links does not raise."""
    return Path(os.path.realpath(path))


def os_reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or str(error)).lower()


def _scan(folder: Path, name: str, optional: bool = False) -> list[os.DirEntry] | None:
    """The entries of a folder the report searches or reads; None for an optional folder that is not there."""
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        if optional:
            return None
        raise Damaged(f"{name} does not exist") from None
    except OSError as error:
        raise Damaged(f"{name} cannot be read: {os_reason(error)}") from None


def _follow(link: Path) -> None:
    """Raise Damaged for a link that leads nowhere."""
    try:
        os.stat(link)
    except FileNotFoundError:
        raise Damaged(f"it is a link to {os.readlink(link)}, which does not exist") from None
    except OSError as error:
        raise Damaged(f"the link cannot be followed: {os_reason(error)}") from None


def find_run_folders(root: Path) -> tuple[list[Path], list[LeftOut]]:
    """The run folders (those holding a config.yaml) at or under ``root``, and the entries on the way that cannot
    be searched: folders without read permission and links to nothing. A run folder's own subfolders are not
    searched: they hold its checkpoints and pictures, not other runs. Raises Damaged when ``root`` cannot be read."""
    if os.path.lexists(root / "config.yaml"):
        return [root], []
    runs: list[Path] = []
    left_out: list[LeftOut] = []
    seen = {real(root)}  # a link back up the tree is searched once

    def visit(entries: list[os.DirEntry]) -> None:
        for entry in sorted(entries, key=lambda e: natural(e.name)):
            path = Path(entry.path)
            if entry.name in SKIPPED:
                continue
            try:
                if entry.is_symlink():
                    _follow(path)
                if not entry.is_dir() or real(path) in seen:
                    continue
                seen.add(real(path))
                if os.path.lexists(path / "config.yaml"):
                    runs.append(path)
                    continue
                inner = _scan(path, "the folder")
            except Damaged as why:
                left_out.append(LeftOut(path, str(why)))
                continue
            except OSError as error:  # the entry's own type cannot be looked up
                left_out.append(LeftOut(path, f"the folder cannot be read: {os_reason(error)}"))
                continue
            visit(inner)

    visit(_scan(root, str(root)))
    return runs, left_out


def _read_bytes(folder: Path, name: str, optional: bool = False) -> bytes | None:
    """The one place the report reads a file: None for an optional file that is not there."""
    path = folder / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if os.path.islink(path):
            raise Damaged(f"{name} is a link to {os.readlink(path)}, which does not exist") from None
        if optional:
            return None
        raise Damaged(f"{name} is missing") from None
    except IsADirectoryError:
        raise Damaged(f"{name} is a folder, not a file") from None
    except OSError as error:
        raise Damaged(f"{name} cannot be read: {os_reason(error)}") from None


def _read_text(folder: Path, name: str, optional: bool = False) -> str | None:
    data = _read_bytes(folder, name, optional)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Damaged(f"{name} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


KINDS = {bool: "true/false", int: "a number", float: "a number", dict: "a mapping", list: "a list", str: "text",
         type(None): "nothing"}


def kind(value) -> str:
    return KINDS.get(type(value), type(value).__name__)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_yaml(text: str, name: str):
    if not text.strip():
        raise Damaged(f"{name} is empty")
    try:
        value = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}" if mark else ""
        raise Damaged(f"{name} is not valid YAML ({error.problem or error.context}{where})") from None
    except (yaml.YAMLError, ValueError) as error:  # ValueError: a date such as 2026-13-45
        raise Damaged(f"{name} is not valid YAML ({error})") from None
    if value is None:
        raise Damaged(f"{name} holds no values (only comments or null)")
    return value


def parse_json(text: str, name: str):
    if not text.strip():
        raise Damaged(f"{name} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Damaged(f"{name} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def parse_config(text: str) -> dict:
    config = parse_yaml(text, "config.yaml")
    if not isinstance(config, dict):
        raise Damaged(f"config.yaml holds {kind(config)}, not a mapping of config keys")
    if "seed" not in config:
        raise Damaged("config.yaml has no seed (the report averages each group's runs over their seeds)")
    if not is_whole(config["seed"]):
        raise Damaged(f"config.yaml's seed is {kind(config['seed'])} ({config['seed']!r}), not a whole number")
    shape = config["data"].get("shape") if isinstance(config.get("data"), dict) else None
    if shape is not None and not (isinstance(shape, list) and shape and all(is_whole(s) and s > 0 for s in shape)):
        raise Damaged(f"config.yaml's data.shape is {shape!r}, not a list of positive whole numbers like [1, 8, 8]")
    for key in ("published", "reached"):
        entries = config.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise Damaged(f"config.yaml's {key} holds {kind(entries)}, not a list of numbers to compare with")
        for i, entry in enumerate(entries, 1):
            if not (isinstance(entry, dict) and isinstance(entry.get("metric"), str)
                    and is_number(entry.get("value"))):
                raise Damaged(f"config.yaml's {key} entry {i} lacks a metric name or a numeric value")
    return config


def parse_final(text: str) -> dict:
    final = parse_json(text, "metrics.json")
    if not isinstance(final, dict):
        raise Damaged(f"metrics.json holds {kind(final)}, not a mapping of metric names to values")
    if not final:
        raise Damaged("metrics.json holds no metrics ({})")
    for key, value in final.items():
        if key.endswith(PROTOCOL):
            if not isinstance(value, dict):
                raise Damaged(f"metrics.json's {key} is {kind(value)} ({json.dumps(value)}), not a mapping")
            continue
        if ("/" in key or key in NUMERIC_KEYS) and not is_number(value) and value not in NON_FINITE:
            raise Damaged(f"metrics.json's {key} is {kind(value)} ({json.dumps(value)}), not a number")
    return final


def parse_history(text: str) -> list[dict]:
    """metrics.jsonl, one JSON object per epoch; a last line without its newline was being written when the run
    stopped (or is being written now)."""
    lines = text.split("\n")  # after a final newline, the last item is ""
    total = len(lines) - (lines[-1] == "")
    history = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if n == len(lines):
                raise Damaged(f"metrics.jsonl line {n} is cut off (the run was stopped while writing it, or is "
                              "writing it now)") from None
            raise Damaged(f"metrics.jsonl line {n} of {total} is not valid JSON ({error.msg} at column "
                          f"{error.colno})") from None
        if not isinstance(entry, dict):
            raise Damaged(f"metrics.jsonl line {n} holds {kind(entry)}, not a mapping of metrics")
        if not is_whole(entry.get("epoch")):
            raise Damaged(f"metrics.jsonl line {n} has no whole-number epoch")
        history.append(entry)
    return history


def parse_overrides(text: str) -> list[str]:
    name = ".hydra/overrides.yaml"
    overrides = parse_yaml(text, name)
    if not isinstance(overrides, list):
        raise Damaged(f"{name} holds {kind(overrides)}, not a list of overrides")
    for i, item in enumerate(overrides, 1):
        if not isinstance(item, str):
            raise Damaged(f"{name} entry {i} is {kind(item)}, not an override such as model.lr=1e-3")
    return overrides


def latest_grid(folder: Path) -> Path | None:
    """The latest sample grid, decoded whole here so that the plot of it cannot fail later."""
    from PIL import Image

    entries = _scan(folder / "samples", "samples/", optional=True) or []
    grids = [(int(m.group(1)), e.name) for e in entries if (m := SAMPLE_GRID.match(e.name))]
    if not grids:
        return None
    name = f"samples/{max(grids)[1]}"
    data = _read_bytes(folder, name)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise Damaged(f"{name} is not a readable image ({error})") from None
    return folder / name


def read_run(folder: Path, recorded_complete: bool = False) -> Run | LeftOut:
    """The run in ``folder``, or why it cannot be read wholly. ``recorded_complete``: sweep.json records its job
    as completed, so a missing metrics.json was lost rather than not yet written."""
    try:
        config = parse_config(_read_text(folder, "config.yaml"))
        text = _read_text(folder, "metrics.json", optional=True)
        if text is None and recorded_complete:
            raise Damaged("metrics.json is missing, though sweep.json records the job as completed")
        final = None if text is None else parse_final(text)
        text = _read_text(folder, "metrics.jsonl", optional=True)
        history = [] if text is None else parse_history(text)
        text = _read_text(folder, ".hydra/overrides.yaml", optional=True)
        overrides = None if text is None else parse_overrides(text)
        return Run(folder, config, final, history, overrides, latest_grid(folder))
    except Damaged as why:
        return LeftOut(folder, str(why))


def read_sweeps(root: Path) -> tuple[list[dict], list[LeftOut]]:
    """The jobs genzoo.sweeps recorded in ``sweep.json`` of ``root`` (or of each sweep under it)."""
    jobs, left_out = [], []
    folders = [root, *sorted((p for p in root.glob("*") if p.is_dir()), key=lambda p: natural(p.name))]
    records: dict[Path, Path] = {}
    for folder in folders:
        if os.path.lexists(folder / "sweep.json"):
            records.setdefault(real(folder), folder)  # a sweep also reached through a link is read once
    for folder in records.values():
        try:
            record = parse_json(_read_text(folder, "sweep.json"), "sweep.json")
            if not isinstance(record, dict) or not isinstance(record.get("jobs"), list):
                raise Damaged("sweep.json holds no list of jobs")
            for i, job in enumerate(record["jobs"], 1):
                if not (isinstance(job, dict) and all(isinstance(job.get(k), (str, type(None)))
                                                      for k in ("status", "run_dir", "error"))):
                    raise Damaged(f"sweep.json's job {i} is not a record of a job (status, run_dir, error)")
            jobs += record["jobs"]
        except Damaged as why:
            left_out.append(LeftOut(folder, f"{why}: its failed and completed jobs are not known"))
    return jobs, left_out
