"""The default digits run with 1 and 2 torch threads, alone and beside a competing CPU-bound process: which thread
count to make the default (a measurement for ``trainer.torch_threads``, printed as ratios to 2 threads alone).

    python benchmarks/threads.py [--epochs 5] [--threads 1 2]

Each run is ``genzoo-train`` with the default config for ``--epochs`` epochs (no test, no W&B); its fitting time is
``fit_time_s`` of its ``metrics.json``. The competitor is a second ``genzoo-train`` with the same thread count,
started just before and killed after, as when two jobs of a sweep share a machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "genzoo-train")


def fit_time(work: Path, name: str, threads: int, epochs: int, env: dict) -> float:
    run_dir = work / name
    subprocess.run([TRAIN, f"trainer.max_epochs={epochs}", f"trainer.torch_threads={threads}", "test=false",
                    "logger=none", "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}",
                    f"paths.cache_dir={work}/cache"], env=env, check=True, capture_output=True)
    return json.loads((run_dir / "metrics.json").read_text())["fit_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genzoo-threads-"))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["WANDB_MODE"] = "disabled"
    times: dict[tuple[int, bool], float] = {}
    for threads in args.threads:
        times[threads, False] = fit_time(work, f"alone-{threads}", threads, args.epochs, env)
        competitor = subprocess.Popen([TRAIN, "trainer.max_epochs=1000", f"trainer.torch_threads={threads}",
                                       "logger=none", "test=false",
                                       "callbacks.progress_bar=null", f"hydra.run.dir={work}/competitor-{threads}",
                                       f"paths.cache_dir={work}/cache"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        try:
            times[threads, True] = fit_time(work, f"beside-{threads}", threads, args.epochs, env)
        finally:
            competitor.kill()
            competitor.wait()
    base = times.get((2, False)) or times[args.threads[-1], False]
    print(f"default digits PixelCNN, {args.epochs} epochs of fitting, {os.cpu_count()} cores")
    print(f"{'threads':>8} {'alone s':>9} {'beside s':>9} {'alone ratio':>12} {'beside ratio':>13}")
    for threads in args.threads:
        alone, beside = times[threads, False], times[threads, True]
        print(f"{threads:>8} {alone:>9.1f} {beside:>9.1f} {base / alone:>11.2f}x {base / beside:>12.2f}x")
    print("ratio: fitting time of 2 threads alone / this one (above 1 is faster)")


if __name__ == "__main__":
    main()
