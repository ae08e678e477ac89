"""genzoo-report's plots, as PNG files: validation curves per group with a band over seeds, the groups' sample grids
side by side, and the linear probe's accuracies against its baselines.

matplotlib's object API (``Figure`` without pyplot) needs no display and keeps no global state between plots.
"""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

# Validation curves drawn first when present: likelihoods, then sample quality.
PREFERRED = ["val/bpd", "val/elbo_bpd", "val/fid", "val/kid", "val/is", "val/mse"]
PROBE_ACC = re.compile(r"probe/acc_(\d+(\.\d+)?)pct$")


def finite(value) -> bool:
    """A number a curve can draw: a diverged value (NaN, ∞) would leave the axis without limits."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_keys(groups) -> list[str]:
    keys = {k for g in groups for r in g.runs for line in r.history for k, v in line.items()
            if k.startswith("val/") and not k.endswith("_step") and finite(v)}
    return [k for k in PREFERRED if k in keys] + sorted(keys - set(PREFERRED))


def wrap(label: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(label, width, break_long_words=False, break_on_hyphens=False)) or label


def plot_curves(groups, path: Path) -> Path | None:
    """One panel per validation metric against epoch: each group's mean over seeds, shaded from its lowest to its
    highest seed."""
    keys = curve_keys(groups)
    if not keys:
        return None
    fig = Figure(figsize=(5.5 * len(keys), 4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colours = color_cycle()
    for ax, key in zip(axes, keys):
        tail: list[float] = []  # the means after the first fifth of training: the part worth the y-axis
        for i, group in enumerate(groups):
            by_epoch: dict[int, list[float]] = {}
            for run in group.runs:
                for line in run.history:
                    if finite(line.get(key)):
                        by_epoch.setdefault(int(line["epoch"]) + 1, []).append(float(line[key]))
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            mean = [statistics.fmean(by_epoch[e]) for e in epochs]
            colour = colours[i % len(colours)]  # one colour per group in every panel
            ax.plot(epochs, mean, label=wrap(group.label), color=colour, marker="." if len(epochs) < 3 else None)
            if len(group.runs) > 1:
                ax.fill_between(epochs, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs],
                                color=colour, alpha=0.2, linewidth=0)
            tail += mean[len(mean) // 5:]
        if len(tail) > 1 and max(tail) > min(tail):  # the first epochs' high values would flatten the rest
            margin = 0.1 * (max(tail) - min(tail))
            ax.set_ylim(min(tail) - margin, max(tail) + margin)
        ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} (line: mean, band: min–max over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def color_cycle() -> list[str]:
    from matplotlib import rcParams

    return rcParams["axes.prop_cycle"].by_key()["color"]


def plot_samples(groups, path: Path) -> Path | None:
    """The latest sample grid of each group's first run that has one, side by side."""
    grids = []
    for group in groups:
        grid = next((r.grid for r in group.runs if r.grid is not None), None)
        if grid is not None:
            grids.append((group.label, grid))
    if not grids:
        return None
    cols = min(len(grids), 4)
    rows = -(-len(grids) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (label, grid) in zip(axes, grids):
        with Image.open(grid) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        epoch = re.findall(r"\d+", grid.name)
        ax.set_title(wrap(label) + (f"\n(epoch {int(epoch[0])})" if epoch else ""), fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def probe_fractions(groups) -> list[str]:
    percents = {m.group(1) for g in groups for r in g.runs for k in r.final if (m := PROBE_ACC.match(k))}
    return [f"{p}pct" for p in sorted(percents, key=float)]


def plot_probe(groups, path: Path) -> Path | None:
    """Linear-probe test accuracy against the fraction of labels: bars per group (error bar: sample std over
    seeds), and the raw-pixel and random-encoder baselines as lines."""
    fractions = probe_fractions(groups)
    probed = [g for g in groups if any(f"probe/acc_{f}" in r.final for r in g.runs for f in fractions)]
    if not probed:
        return None
    fig = Figure(figsize=(max(5.0, 1.6 * len(fractions) * max(1, len(probed) / 2)), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(fractions))
    width = 0.8 / len(probed)

    def values(group, key):
        return [float(r.final[key]) for r in group.runs if finite(r.final.get(key))]

    for i, group in enumerate(probed):
        means, stds = [], []
        for f in fractions:
            v = values(group, f"probe/acc_{f}")
            means.append(statistics.fmean(v) if v else np.nan)
            stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
        ax.bar(x + (i - (len(probed) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=wrap(group.label))
    for baseline, style in (("raw", "k--"), ("random", "k:")):
        line = [statistics.fmean(v) if (v := [x for g in probed for x in values(g, f"probe/{baseline}_acc_{f}")])
                else np.nan for f in fractions]
        if not all(np.isnan(line)):
            ax.plot(x, line, style, marker="o", label=f"{baseline} {'pixels' if baseline == 'raw' else 'encoder'}")
    ax.set_xticks(x, [f.replace("pct", " %") for f in fractions])
    ax.set_xlabel("labels used by the probe")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return path
