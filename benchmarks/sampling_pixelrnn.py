"""Naive against incremental sampling for the two PixelRNNs (Row LSTM, Diagonal BiLSTM), in one run.

    python benchmarks/sampling_pixelrnn.py       # batch 64, CPU: 1×8×8 with 17 levels (digits), 1×28×28 with 256
    python benchmarks/sampling_pixelrnn.py --device cuda --batch 256

Each model is built from its shipped config (``conf/model/{row_lstm,diagonal_bilstm}.yaml``; untrained weights, the
cost does not depend on them), in evaluation mode, and for each image space:

* fast: ``net.generate`` from a fixed seed, every sub-pixel, timed whole. It carries the LSTM states: one step of
  every layer per sub-pixel (and, for the Diagonal BiLSTM, a right-to-left pass over each finished row);
* naive: one full network pass per sub-pixel, from the same seed with the same draws. Every step costs the same, so
  only the first ``--naive-steps`` are timed (0: all) and the time per step is multiplied by C·H·W; the output says
  which. Its draws in that prefix are compared with the fast sampler's;
* check (untimed, ``sampling_check.py``): the fast samples are fed back through the full network, whose logits at
  every step are the naive sampler's (causality); the largest logit difference, and the draws that float rounding
  flips (the naive logits drawn with the same uniform give another value), are counted over all steps.
"""

from __future__ import annotations

import argparse
import math
import time
from importlib.resources import files

import torch
from omegaconf import OmegaConf

from genzoo.models import DiagonalBiLSTM, RowLSTM
from genzoo.models.autoregressive import Draws
from sampling_check import against_full_pass

CLASSES = {"row_lstm": RowLSTM, "diagonal_bilstm": DiagonalBiLSTM}
SPACES = {"digits": ((1, 8, 8), 17), "mnist256": ((1, 28, 28), 256)}


def shipped_model(name: str, shape, levels: int, device: str):
    cfg = OmegaConf.load(files("genzoo.conf") / "model" / f"{name}.yaml")
    hparams = {k: cfg[k] for k in cfg if k not in ("_target_", "shape", "levels", "num_classes", "monitor", "mode")}
    torch.manual_seed(0)
    return CLASSES[name](shape=shape, levels=levels, **hparams).to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def order(shape):
    c, h, w = shape
    return [(k, i, j) for i in range(h) for j in range(w) for k in range(c)]  # raster, then channel


@torch.no_grad()
def measure(model, batch: int, naive_steps: int, seed: int, device: str) -> dict:
    shape, steps = model.shape, order(model.shape)
    # warm-up on a 2×2 image (the networks take any shape), so the first timing holds no one-off start costs
    model.net.generate(2, None, Draws, model.scale, (shape[0], 2, 2))
    model.logits(torch.zeros(2, shape[0], 2, 2, dtype=torch.long, device=device))
    # fast, timed whole
    torch.manual_seed(seed)
    sync(device)
    start = time.perf_counter()
    fast = model.net.generate(batch, None, Draws, model.scale, shape)
    sync(device)
    fast_s = time.perf_counter() - start
    # naive, the first n steps timed
    n = len(steps) if naive_steps <= 0 else min(naive_steps, len(steps))
    torch.manual_seed(seed)
    sync(device)
    start = time.perf_counter()
    naive = model.sample_naive(batch, steps=n)
    sync(device)
    naive_s = (time.perf_counter() - start) / n * len(steps)
    prefix_equal = all(torch.equal(naive[:, k, i, j], fast[:, k, i, j]) for k, i, j in steps[:n])
    # check every step against one full pass over the fast samples (untimed)
    again, gap, flips, draws = against_full_pass(model, batch, seed)
    assert torch.equal(again, fast)
    return {"fast_s": fast_s, "naive_s": naive_s, "timed": n, "steps": len(steps), "prefix_equal": prefix_equal,
            "gap": gap, "flips": flips, "draws": draws}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-steps", type=int, default=16, help="naive steps timed on 28×28 (0: all)")
    parser.add_argument("--spaces", default="digits,mnist256")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"batch {args.batch}, device {args.device}, torch threads {torch.get_num_threads()}")
    ratios = []
    for space in args.spaces.split(","):
        shape, levels = SPACES[space]
        for name in CLASSES:
            model = shipped_model(name, shape, levels, args.device)
            # digits: every naive step is timed; larger images: a prefix, extrapolated
            r = measure(model, args.batch, 0 if math.prod(shape) <= 64 else args.naive_steps, args.seed, args.device)
            ratio = r["naive_s"] / r["fast_s"]
            ratios.append((f"{name} {'x'.join(map(str, shape))}/{levels}", ratio))
            timed = "all steps" if r["timed"] == r["steps"] else f"{r['timed']} of {r['steps']} steps timed, scaled"
            print(f"{name:16s} {'x'.join(map(str, shape)):7s} levels {levels:3d}: fast {r['fast_s']:8.2f} s, "
                  f"naive {r['naive_s']:8.2f} s ({timed}), ratio {ratio:6.1f}x; max |Δlogit| {r['gap']:.1e}, "
                  f"flipped draws {r['flips']}/{r['draws']}, naive prefix equal: {r['prefix_equal']}")
    print("ratios: " + ", ".join(f"{label} {ratio:.1f}x" for label, ratio in ratios))


if __name__ == "__main__":
    main()
