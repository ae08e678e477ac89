"""genzoo-report: a run folder or a sweep folder → report.md, report.html and PNG plots beside them.

    genzoo-report outputs/sweeps/2026-11-25_19-30-00_a1b2c3      # every job of a sweep
    genzoo-report outputs/runs/2026-11-25_12-00-00_d4e5f6        # one run
    genzoo-report outputs/sweeps --out reports/all --wandb        # several sweeps at once, also to W&B

Everything comes from the runs' own files (``config.yaml``, ``metrics.jsonl``, ``metrics.json``, ``samples/``,
``.hydra/overrides.yaml``), so it works offline and whatever logger the runs used. Runs are grouped by the swept
keys — the overrides that differ between runs (or, without Hydra's record, the config values that differ) — with
``seed`` left out, so each group's final metrics are a mean ± sample standard deviation over its seeds. Where the
experiment's config names ``published`` numbers, they stand beside the group's own.

Fidelity numbers (FID, IS, KID, …) are only comparable under one protocol (``genzoo.evaluation.protocol``): each
fidelity column holds one protocol, named by a tag in its header (``test/fid [P1]``) and spelled out in the table of
protocols; runs measured under another protocol (or none recorded) get a column of their own, and are never averaged
with the others. A published number stands beside ours with both protocols. A folder it cannot read wholly
(a line a kill cut in half, an empty, unreadable or not-UTF-8 file, a link to nowhere) is never averaged in: the
report lists it under "Left out" with the file and what is wrong (``genzoo.report_read``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from genzoo.evaluation.protocol import describe, identity, is_fidelity_metric
from genzoo.report_read import Damaged, Run, find_run_folders, natural, os_reason, read_run, read_sweeps, real
from genzoo.report_protocols import columns_for, mapping, protocols_of, run_protocol
from genzoo.report_render import render_html, render_markdown

# Config keys that differ between runs without being a choice of the experimenter (folders, ids, the numbers an
# experiment quotes).
IGNORED_PREFIXES = ("paths.", "logger.", "hydra.", "resume", "task_name", "published", "reached")
IGNORED_SUFFIXES = ("dir", "dirpath", "_path")
PROBE_ACC = r"probe/acc_\d+(\.\d+)?pct$"  # the linear probe's accuracy with that percentage of the labels
PER_CLASS = "/fid_class/"  # one FID per class: in metrics.json, summed up in the table by intra_fid


@dataclass
class Group:
    key: tuple[tuple[str, str], ...]  # the swept (key, value) pairs, seed left out
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        if len(self.key) == 1:  # one swept key: its value says it all (the table names the key)
            return str(self.key[0][1])
        return ", ".join(f"{k}={v}" for k, v in self.key) or "all runs"

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node, default=str) if isinstance(node, (list, dict)) else node}


def is_seed(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")  # e.g. callbacks.linear_probe.seed: ${seed}


def ignored(key: str) -> bool:
    return key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def override_pairs(run: Run) -> dict[str, str]:
    pairs = {}
    for item in run.overrides or []:
        key, _, value = item.partition("=")
        pairs[key.lstrip("+~")] = value
    return pairs


def config_pairs(run: Run) -> dict[str, str]:
    """The run's config as dotted keys, a node built from another ``_target_`` collapsed to that class."""
    flat = {k: v for k, v in flatten(run.config).items() if not ignored(k)}
    targets = {k[: -len("._target_")]: str(v).rsplit(".", 1)[-1] for k, v in flat.items() if k.endswith("._target_")}
    return {**{k: str(v) for k, v in flat.items()}, **{f"{node}": cls for node, cls in targets.items()}}


def swept_keys(runs: list[Run]) -> tuple[list[str], dict[Path, dict[str, str]]]:
    """Keys whose values differ between runs, and each run's value of them. Hydra's overrides when every run has
    them (``model=gated_pixelcnn`` rather than thirty changed model keys), else the config's differences."""
    use_overrides = all(r.overrides is not None for r in runs)
    values = {r.path: (override_pairs(r) if use_overrides else config_pairs(r)) for r in runs}
    keys = sorted({k for v in values.values() for k in v})
    differing = [k for k in keys if not ignored(k) and len({v.get(k, "—") for v in values.values()}) > 1]
    if not use_overrides:
        # A node chosen by its class (model=PixelCNN): its own keys follow from that choice.
        nodes = [k for k in differing if any(d.startswith(k + ".") for d in differing)
                 and any(k + "._target_" == d for d in differing)]
        differing = [k for k in differing if not k.endswith("._target_")
                     and not any(k.startswith(n + ".") for n in nodes)]
        differing = fewest_keys(differing, values)
    return differing, values


def fewest_keys(keys: list[str], values: dict[Path, dict[str, str]]) -> list[str]:
    """The fewest keys that still tell the runs' groups apart, shallow keys first: values that follow another
    choice (trainer.max_epochs set by the experiment, a monitor interpolated from the model) add no group."""
    def count(chosen):
        return len({tuple(v.get(k, "—") for k in chosen) for v in values.values()})

    seeds = [k for k in keys if is_seed(k)]
    rest = sorted((k for k in keys if not is_seed(k)), key=lambda k: (k.count("."), len(k), k))
    full, chosen = count(rest), []
    for key in rest:
        if count(chosen) == full:
            break
        if count(chosen + [key]) > count(chosen):
            chosen.append(key)
    return sorted(chosen) + seeds


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    keys, values = swept_keys(runs)
    group_keys = [k for k in keys if not is_seed(k)]
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = tuple((k, values[run.path].get(k, "—")) for k in group_keys)
        groups.setdefault(key, Group(key)).runs.append(run)
    return list(groups.values()), group_keys


def summary_keys(runs: list[Run]) -> list[str]:
    """Final metrics worth a column: test metrics, probe accuracies of the encoder, the best monitored value."""
    keys = {k for r in runs for k, v in r.final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    test = sorted(k for k in keys if k.startswith("test/") and not k.endswith("_step") and PER_CLASS not in k)
    probe = sorted((k for k in keys if re.match(PROBE_ACC, k)),
                   key=lambda k: float(re.findall(r"[\d.]+", k)[0]))
    return test + probe + [k for k in ("best_score", "time_s") if k in keys]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1), None for a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def metric_value(run: Run, key: str) -> float | None:
    """A final metric; ``…_nats`` keys not logged as such come from the logged ``…_bpd`` (nats per image)."""
    value = run.final.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if key.endswith("nats"):
        bpd = run.final.get(key[: -len("nats")] + "bpd")
        shape = mapping(run.config, "data").get("shape")  # checked by report_read
        if isinstance(bpd, (int, float)) and shape:
            return float(bpd) * math.prod(shape) * math.log(2)
    return None


def summarise(group: Group, key: str, protocol: str | None = None) -> dict | None:
    """Mean ± std of ``key`` over the group's runs; ``protocol``: of those measured under that protocol alone."""
    runs = [r for r in group.runs if protocol is None or identity(run_protocol(r, key)) == protocol]
    values = [v for r in runs if (v := metric_value(r, key)) is not None]
    if not values:
        return None
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


def published_rows(groups: list[Group], protocols: dict[str, dict]) -> list[dict]:
    """One row per number an experiment names — ``published`` (the literature) or ``reached`` (what genzoo reached
    before with the same file) — with the group's own value of that metric; for a fidelity metric one row per
    protocol the group measured it with, the two protocols side by side."""
    rows = []
    for group in groups:
        for kind in ("published", "reached"):
            for entry in group.runs[0].config.get(kind) or []:
                metric, theirs = entry["metric"], entry.get("protocol")
                row = {"group": group.label, "kind": kind, **entry,
                       "their_protocol": describe(theirs) if theirs else ""}
                if not is_fidelity_metric(metric):
                    rows.append({**row, "ours": summarise(group, metric), "our_protocol": ""})
                    continue
                measured = dict.fromkeys(identity(run_protocol(r, metric)) for r in group.runs
                                         if metric_value(r, metric) is not None)
                rows += [{**row, "ours": summarise(group, metric, i), "our_protocol": protocols[i]["tag"]}
                         for i in measured] or [{**row, "ours": None, "our_protocol": ""}]
    return rows


def build_report(root: Path, out: Path) -> dict:
    from genzoo.report_plots import plot_curves, plot_probe, plot_samples

    try:
        folders, left_out = find_run_folders(root)
    except Damaged as why:
        raise SystemExit(f"genzoo-report: {why}: give a folder you can read.") from None
    if not folders and not left_out:
        raise SystemExit(f"genzoo-report: no run folders (folders with a config.yaml) under {root}: give a "
                         "run folder or a sweep folder of genzoo-train.")
    # genzoo.sweeps' record of the sweep (or of each sweep, for a folder of sweeps)
    jobs, unreadable_records = read_sweeps(root)
    failed = [j for j in jobs if j.get("status") == "failed"]
    failed_dirs = {real(j["run_dir"]) for j in failed if j.get("run_dir")}
    completed_dirs = {real(j["run_dir"]) for j in jobs
                      if j.get("status") == "completed" and j.get("run_dir")}
    found: list[Run] = []
    for folder in folders:
        read = read_run(folder, recorded_complete=real(folder) in completed_dirs)
        (found if isinstance(read, Run) else left_out).append(read)
    # A folder that cannot be read wholly is never averaged in; a failed job's folder is listed with its error.
    left_out.sort(key=lambda o: natural(str(o.path)))
    unreadable = [{"run": str(o.path), "reason": o.reason} for o in left_out if real(o.path) not in failed_dirs]
    unreadable += [{"run": str(o.path), "reason": o.reason} for o in unreadable_records]
    # Only finished runs (their metrics.json written) enter the table: a failed, killed or running one would
    # bring its partial numbers, or none, and the keys it was started with, into the grouping. One run folder
    # given on its own is reported whatever its state, to watch it.
    runs = [r if r.final is not None else replace(r, final={})
            for r in found if r.final is not None or r.path == root]
    if not runs and not unreadable:
        raise SystemExit(f"genzoo-report: none of the {len(found)} run folders under {root} has finished (no "
                         "metrics.json): give one of them to see its progress.")
    kept = {r.path for r in runs}
    unfinished = [{"run": str(r.path), "epochs": len({line["epoch"] for line in r.history})}
                  for r in found if r.path not in kept and real(r.path) not in failed_dirs]
    groups, group_keys = group_runs(runs)
    keys = summary_keys(runs)
    protocols = protocols_of(runs, keys + [p["metric"] for g in groups for kind in ("published", "reached")
                                           for p in g.runs[0].config.get(kind) or []])
    columns = columns_for(runs, keys, protocols)
    rows = [{"group": dict(g.key), "label": g.label, "seeds": g.seeds, "runs": [str(r.path) for r in g.runs],
             "metrics": {c.name: summarise(g, c.metric, c.protocol) for c in columns}} for g in groups]
    wandb_cfg = mapping(mapping(runs[0].config, "logger"), "wandb") if runs else {}
    report = {"root": str(root), "group_keys": group_keys, "columns": [c.name for c in columns], "rows": rows,
              "wandb": {"project": wandb_cfg.get("project") or "genzoo", "entity": wandb_cfg.get("entity")},
              "protocols": list(protocols.values()),
              "published": published_rows(groups, protocols), "failed": failed, "unreadable": unreadable,
              "unfinished": unfinished, "plots": []}
    try:
        out.mkdir(parents=True, exist_ok=True)
        plots = [p for p in (plot_curves(groups, out / "curves.png"), plot_samples(groups, out / "samples.png"),
                             plot_probe(groups, out / "probe.png")) if p is not None]
        report["plots"] = [p.name for p in plots]
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(render_markdown(report))
        (out / "report.html").write_text(render_html(report))
    except OSError as error:
        raise SystemExit(f"genzoo-report: cannot write the report to {out} ({os_reason(error)}): give --out a "
                         "folder you can write to.") from None
    return report


def log_to_wandb(report: dict, out: Path, root: Path, mode: str) -> None:
    """The table and the plots as one W&B run of job type ``report``, in the sweep's group."""
    import wandb

    columns = ["group", "seeds", *report["columns"]]
    table = wandb.Table(columns=columns)
    for row in report["rows"]:
        cells = [(m or {}).get("mean") for m in (row["metrics"][k] for k in report["columns"])]
        table.add_data(row["label"], len(row["seeds"]), *cells)
    try:  # the report is on disk already: W&B adds a copy, and its failure is a warning, never the report's
        run = wandb.init(project=report["wandb"]["project"], entity=report["wandb"]["entity"], group=root.name,
                         name=f"report {root.name}", job_type="report", dir=str(out), mode=mode,
                         reinit="finish_previous", settings={"init_timeout": 20, "finish_timeout": 60})
        try:
            images = {f"report/{Path(p).stem}": wandb.Image(str(out / p)) for p in report["plots"]}
            run.log({"report/table": table, **images})
        finally:
            run.finish()
    except Exception as e:  # noqa: BLE001 - whatever W&B raises, the files beside the report stand
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"genzoo-report: the report could not be logged to W&B ({first}); it is in {out}.", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genzoo-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder, a sweep folder, or a folder of them")
    parser.add_argument("--out", type=Path, help="where report.md/.html and the PNGs go (default: PATH)")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                        help="also log to W&B (default: only when W&B credentials are configured)")
    args = parser.parse_args(argv)
    root = real(args.path.expanduser())
    if not root.exists():
        parser.error(f"{args.path} does not exist: give a run folder or a sweep folder of genzoo-train")
    if not root.is_dir():
        parser.error(f"{args.path} is a file, not a folder: give a run folder or a sweep folder of genzoo-train")
    out = real((args.out or root).expanduser())
    report = build_report(root, out)
    n_groups, n_runs = len(report["rows"]), sum(len(r["runs"]) for r in report["rows"])
    print(f"{n_groups} group{'s' * (n_groups != 1)} of {n_runs} run{'s' * (n_runs != 1)} → "
          f"{out / 'report.md'}, {out / 'report.html'}" + "".join(f", {p}" for p in report["plots"]))
    if report["failed"]:
        print(f"{len(report['failed'])} failed jobs are listed in the report.", file=sys.stderr)
    for entry in report["unreadable"]:
        print(f"left out {entry['run']}: {entry['reason']}", file=sys.stderr)
    if not report["rows"]:
        print(f"genzoo-report: no run folder under {root} could be read wholly: the report lists each under "
              "'Left out' with its reason; mend or remove those folders and report again.", file=sys.stderr)
        return 1

    from genzoo.run.wandb_server import wandb_credentials, wandb_mode

    if args.wandb or (args.wandb is None and wandb_credentials()):
        log_to_wandb(report, out, root, wandb_mode("auto", save_dir=str(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
