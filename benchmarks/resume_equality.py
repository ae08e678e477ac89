"""Kill a default digits PixelCNN run with SIGKILL in the middle of an epoch, resume it, and compare it with the
same run left alone: final metrics and weights (a measurement for the README's claim, not a speed benchmark).

    python benchmarks/resume_equality.py [--epochs 12] [--kill-after-step 150]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TRAIN = str(Path(sys.executable).parent / "genzoo-train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--every", type=int, default=50, help="step-checkpoint interval")
    ap.add_argument("--kill-after-step", type=int, default=150)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genzoo-resume-"))
    run = ["logger=csv", f"trainer.max_epochs={args.epochs}", "callbacks.progress_bar=null",
           f"callbacks.step_checkpoint.every_n_train_steps={args.every}", f"paths.output_dir={work}/outputs",
           f"paths.cache_dir={work}/cache"]
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")

    start = time.time()
    subprocess.run([TRAIN, *run, f"hydra.run.dir={work}/whole"], env=env, check=True, capture_output=True)
    print(f"uninterrupted run: {time.time() - start:.0f} s")

    killed = work / "killed"
    proc = subprocess.Popen([TRAIN, *run, f"hydra.run.dir={killed}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / f"step{args.kill_after_step:07d}.ckpt"
    while not target.exists():
        if proc.poll() is not None:
            sys.exit("the run ended before the kill; use a larger --epochs or a smaller --kill-after-step")
        time.sleep(0.01)
    time.sleep(0.5)  # let it run into the next steps, as a real crash would
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = max(killed.glob("checkpoints/*.ckpt"), key=lambda c: c.stat().st_mtime_ns)
    print(f"killed; resuming from {newest.name} (global step {torch.load(newest, weights_only=True)['global_step']})")
    subprocess.run([TRAIN, f"resume={killed}"], env=env, check=True, capture_output=True)

    whole, resumed = (json.loads((work / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    for key in ("steps", "val/bpd", "test/bpd", "train/loss_step"):
        print(f"{key}: uninterrupted {whole[key]!r}, killed and resumed {resumed[key]!r}")
    wa, wb = (torch.load(work / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
              for d in ("whole", "killed"))
    print(f"max |weight difference|: {max((wa[k] - wb[k]).abs().max().item() for k in wa):.3g}")
    print(f"(run folders under {work})")


if __name__ == "__main__":
    main()
