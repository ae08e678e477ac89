"""The same two-seed digits sweep under Hydra's basic launcher, the joblib launcher (2 jobs at once) and submitit's
local launcher, one torch thread per job, in one run: wall times as ratios to the basic launcher's, and whether the
three left complete, identical records (sweep.json) and final metrics (each job's metrics.json).

    python benchmarks/launchers.py [--epochs 20] [--seeds 0,1] [--launchers basic,joblib,submitit_local] [--repeats 3]

Target on 2 CPU cores: joblib ≤ 0.65× the basic launcher. The cache (digits array, domain classifier) is filled by
an untimed smoke run first, so no launcher pays for it. The load average is printed before and after: on a shared
machine the ratios move with it, so the launchers take turns (--repeats rounds) and the median wall times are
compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).parent / "genzoo-train")
LAUNCHER_ARGS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                 "submitit_local": ["hydra/launcher=submitit_local"]}
COMPARED = ("val/bpd", "test/bpd", "test/fid", "steps", "epochs")


def sweep(launcher: str, seeds: str, common: list[str], work: Path, env: dict) -> tuple[float, Path, int]:
    out = work / launcher
    n = 0
    while (out / str(n)).exists():
        n += 1
    out = out / str(n)
    start = time.time()
    proc = subprocess.run([TRAIN, "-m", *LAUNCHER_ARGS[launcher], f"seed={seeds}", *common,
                           f"paths.output_dir={out}"], env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    (sweep_dir,) = (out / "sweeps").iterdir()
    return wall, sweep_dir, proc.returncode


def records(sweep_dir: Path) -> tuple[list[tuple], dict[int, dict]]:
    record = json.loads((sweep_dir / "sweep.json").read_text())
    # each launcher writes to its own paths.output_dir, which is one of the overrides
    jobs = [(j["num"], [o for o in j["overrides"] if not o.startswith("paths.")], j["status"], j["value"])
            for j in record["jobs"]]
    finals = {}
    for j in record["jobs"]:
        metrics = json.loads((Path(j["run_dir"]) / "metrics.json").read_text())
        finals[j["num"]] = {k: metrics.get(k) for k in COMPARED}
    return jobs, finals


def same(a, b, rel: float = 1e-6) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--launchers", default="basic,joblib,submitit_local")
    ap.add_argument("--repeats", type=int, default=1, help="rounds in which every launcher runs once")
    args = ap.parse_args()
    launchers = args.launchers.split(",")
    work = Path(tempfile.mkdtemp(prefix="genzoo-launchers-"))
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    common = ["logger=csv", "callbacks.progress_bar=null", f"trainer.max_epochs={args.epochs}",
              "trainer.torch_threads=1", f"paths.cache_dir={work}/cache"]

    subprocess.run([TRAIN, "debug=smoke", *common[:2], f"paths.cache_dir={work}/cache",
                    f"paths.output_dir={work}/warm"], env=env, check=True, capture_output=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs; "
          f"{args.epochs} epochs of the default PixelCNN per job, seeds {args.seeds}")

    results, walls = {}, {launcher: [] for launcher in launchers}
    for round_ in range(args.repeats):
        for launcher in launchers[round_ % len(launchers):] + launchers[:round_ % len(launchers)]:
            wall, sweep_dir, code = sweep(launcher, args.seeds, common, work, env)
            walls[launcher].append(wall)
            if launcher not in results or code != 0:
                results[launcher] = (wall, *records(sweep_dir), code)
            print(f"{launcher:>15}: {wall:7.1f} s  exit {code}  ({sweep_dir})")
    for launcher in launchers:
        results[launcher] = (statistics.median(walls[launcher]), *results[launcher][1:])
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")

    base_wall, base_jobs, base_finals, _ = results[launchers[0]]
    n_seeds = len(args.seeds.split(","))
    ok = True
    for launcher in launchers:
        wall, jobs, finals, code = results[launcher]
        complete = code == 0 and len(jobs) == n_seeds and all(j[2] == "completed" for j in jobs)
        identical = same(jobs, base_jobs) and same(finals, base_finals)
        ok &= complete and identical
        if not identical:
            print(f"{launcher:>15}: records {jobs} and final metrics {finals} against {base_jobs} and {base_finals}")
        print(f"{launcher:>15}: {wall / base_wall:.2f}× the {launchers[0]} launcher's median wall time; records "
              f"{'complete' if complete else 'INCOMPLETE'}, {'identical' if identical else 'DIFFERENT'} "
              f"({', '.join(f'{k}={finals[n].get(k)}' for n in sorted(finals) for k in COMPARED[:2])})")
    if "joblib" in results:
        ratio = results["joblib"][0] / base_wall
        print(f"joblib ratio {ratio:.2f} (target ≤ 0.65): {'met' if ratio <= 0.65 else 'NOT met'}")
    print("checks:", "all passed" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
