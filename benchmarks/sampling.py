"""Naive against cached sampling (Ramachandran et al. 2017) for the shipped PixelCNN, Gated PixelCNN and PixelCNN++
networks.

    python benchmarks/sampling.py                              # 1×28×28, 256 levels, batch 64, CPU
    python benchmarks/sampling.py --batch 256 --device cuda    # on a GPU
    python benchmarks/sampling.py --models pixelcnn_pp --batch 16   # PixelCNN++ alone, 3×32×32

Each model is built from its shipped config (``conf/model/{pixelcnn,gated_pixelcnn}.yaml``, untrained weights:
the cost does not depend on them) for 1×28×28 images with 256 levels, in evaluation mode. Then, in one run:

* fast: ``model.sample(batch)`` from a fixed seed, every one of the H·W·C sub-pixels, timed whole, twice. On a
  GPU the first call records the sampling loop as a CUDA graph and the second replays it (as every later call
  with that batch size does); the speedup uses the second call, and the first is printed beside it. PixelCNN
  computes a diagonal wavefront of pixels per step (136 steps for 28×28), Gated PixelCNN one pixel per step;
* naive: ``model.sample_naive`` from the same seed. It runs the full network once per sub-pixel, so every step
  costs the same: the first ``--naive-steps`` steps are timed and the time per step is multiplied by H·W·C (the
  output says so; ``--naive-steps 0`` runs all of them). Its draws are checked against the fast sampler's;
* check (not timed, ``sampling_check.py``): the fast sampler's logits at every sub-pixel against one full pass
  over its samples, and the draws that float rounding flips; and the tensor operations each sampler runs per
  batch, counted on CPU, which is what a GPU launches as kernels.

PixelCNN++ (``conf/model/pixelcnn_pp.yaml``) is measured on 3×32×32 images with 256 levels, the colour data it is
for. Its naive sampler runs the full network once per *pixel* (a pixel's parameters do not depend on its own
channels), its first ``--naive-steps`` pixels timed and extrapolated to H·W; the fast one computes each activation
once (``genzoo.nn.fast_pixelcnn_pp``). Its check: the draws of the timed prefix, and the fast sampler's CDFs
against one full pass over its samples.

The last line is ``speedup: X`` for PixelCNN (naive seconds / fast seconds); the other models' lines come first.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files

import torch
from omegaconf import OmegaConf

from genzoo.models import GatedPixelCNN, PixelCNN, PixelCNNPP
from genzoo.models.autoregressive import Draws
from genzoo.nn.fast_pixelcnn import generate_gated_pixelcnn, generate_pixelcnn
from sampling_check import against_full_pass, cdf_gap, count_ops

SHAPE, LEVELS = (1, 28, 28), 256
PP_SHAPE = (3, 32, 32)
CLASSES = {"gated_pixelcnn": GatedPixelCNN, "pixelcnn": PixelCNN, "pixelcnn_pp": PixelCNNPP}
LOOPS = {"gated_pixelcnn": generate_gated_pixelcnn, "pixelcnn": generate_pixelcnn}


def shipped_model(name: str, device: str, shape=SHAPE):
    """The shipped config, less what the data fills in and what only the run uses."""
    cfg = OmegaConf.load(files("genzoo.conf") / "model" / f"{name}.yaml")
    hparams = {k: cfg[k] for k in cfg if k not in ("_target_", "shape", "levels", "num_classes", "monitor", "mode")}
    torch.manual_seed(0)
    return CLASSES[name](shape, LEVELS, 0, **hparams).to(device).eval(), hparams


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fast(model, batch: int, device: str, seed: int):
    """The cached sampler from ``seed``, timed twice: (samples, first call's seconds, second call's seconds)."""
    times = []
    for _ in range(2):
        torch.manual_seed(seed)
        start = time.perf_counter()
        fast = model.sample(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    return fast, times[0], times[1]


def time_naive(model, batch: int, device: str, seed: int, steps: int, per: int):
    """The naive sampler's first ``steps`` sub-pixels from ``seed``: (samples, seconds per one of ``per`` units)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    naive = model.sample_naive(batch, steps=steps)
    sync(device)
    return naive, (time.perf_counter() - start) / per


def measure(name: str, batch: int, device: str, naive_steps: int, seed: int = 1) -> float:
    model, hparams = shipped_model(name, device)
    steps = SHAPE[0] * SHAPE[1] * SHAPE[2]
    # Warm-up: kernels, allocator and (on GPU) cuDNN's algorithm choice, outside the timed runs.
    model.sample_naive(batch, steps=1)
    model.net.generate(batch, None, Draws, model.scale, (SHAPE[0], 2, SHAPE[2]))
    sync(device)

    fast, first_s, fast_s = time_fast(model, batch, device, seed)
    timed = steps if naive_steps <= 0 else min(naive_steps, steps)
    naive, naive_step_s = time_naive(model, batch, device, seed, timed, timed)
    naive_s = naive_step_s * steps
    # The prefix the naive sampler drew, in raster order, against the fast sampler's.
    prefix = torch.arange(steps, device=device).view(SHAPE[1], SHAPE[2]) < timed  # C = 1
    differ = int(((naive != fast) & prefix).sum())

    eager, worst, flips, draws = against_full_pass(model, batch, seed)
    # Operations, and so GPU kernels, per batch (their number does not depend on its size): the cached loop's as a
    # CUDA graph records it, and the naive sampler's set-up plus one step's operations times the steps.
    loop = LOOPS[name]
    plan = loop.plan(model.net, model.shape, device)  # made once before a CUDA graph records: not counted
    loop_ops = count_ops(lambda: loop(model.net, 2, None, Draws, model.scale, model.shape, plan=plan))
    setup_ops = count_ops(lambda: model.sample_naive(2, steps=0))
    naive_ops = setup_ops + (count_ops(lambda: model.sample_naive(2, steps=1)) - setup_ops) * steps
    width = hparams["net"].get("channels")
    depth = hparams["net"].get("blocks", hparams["net"].get("layers"))
    print(f"{name}: {width} channels, depth {depth}, batch {batch}, {device}, "
          f"{torch.get_num_threads()} torch threads (the fast path uses 1 on CPU)")
    how = "all steps run" if timed == steps else f"{timed} of {steps} steps timed, extrapolated to {steps}"
    print(f"  naive: {naive_s:9.2f} s  ({naive_step_s * 1000:.1f} ms per step; {how}); "
          f"draws differing from the fast run in that prefix: {differ}")
    print(f"  fast:  {fast_s:9.2f} s  ({fast_s / steps * 1000:.2f} ms per sub-pixel, all {steps} drawn; "
          f"first call {first_s:.2f} s{', recording the CUDA graph' if device.startswith('cuda') else ''})")
    print(f"         sub-pixels differing from the eager cached loop from the same seed: {int((fast != eager).sum())}")
    print(f"  check: max |fast - full-pass logit| = {worst:.2e}; draws flipped by rounding: {flips} of {draws}")
    print(f"  tensor operations (GPU kernels) per batch: naive {naive_ops}, fast {loop_ops} in {len(plan.slots)} "
          f"steps of up to {max(len(p) for p in plan.pixels)} pixels")
    return naive_s / fast_s


def measure_pixelcnn_pp(batch: int, device: str, naive_steps: int, seed: int = 1) -> float:
    model, hparams = shipped_model("pixelcnn_pp", device, PP_SHAPE)
    c, h, w = PP_SHAPE
    pixels = h * w
    model.sample_naive(batch, steps=c)  # warm-up
    model.net.generate(2, None, Draws, model.scale, (c, 4, 4))
    sync(device)
    fast, first_s, fast_s = time_fast(model, batch, device, seed)  # the first call also plans the program
    timed = pixels if naive_steps <= 0 else min(naive_steps, pixels)
    naive, naive_pixel_s = time_naive(model, batch, device, seed, timed * c, timed)
    naive_s = naive_pixel_s * pixels
    differ = int((naive.flatten(2)[..., :timed] != fast.flatten(2)[..., :timed]).sum())
    gap = cdf_gap(model, fast)
    net = hparams["net"]
    print(f"pixelcnn_pp: {net['channels']} channels, {net['resnets']} blocks per resolution, "
          f"{hparams['components']} components, {c}x{h}x{w}, batch {batch}, {device}, "
          f"{torch.get_num_threads()} torch threads (the fast path uses 1 on CPU)")
    how = "all pixels run" if timed == pixels else f"{timed} of {pixels} pixels timed, extrapolated to {pixels}"
    print(f"  naive: {naive_s:9.2f} s  ({naive_pixel_s * 1000:.1f} ms per pixel; {how}); "
          f"draws differing from the fast run in that prefix: {differ}")
    print(f"  fast:  {fast_s:9.2f} s  ({fast_s / pixels * 1000:.2f} ms per pixel; first call {first_s:.2f} s)")
    print(f"  check: max |fast - full-pass CDF| = {gap:.2e}")
    return naive_s / fast_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--naive-steps", type=int, default=8,
                        help="naive steps (pixels for PixelCNN++) timed, then extrapolated to all (0: run all; "
                             "default 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the naive sampler (default: torch's own; the fast one uses 1 on CPU)")
    parser.add_argument("--models", nargs="+", choices=list(CLASSES), default=list(CLASSES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; images 1x28x28 (PixelCNN++: 3x32x32), {LEVELS} levels; untrained shipped "
          "networks")
    ratios = {
        name: measure_pixelcnn_pp(args.batch, args.device, args.naive_steps) if name == "pixelcnn_pp"
        else measure(name, args.batch, args.device, args.naive_steps)
        for name in args.models
    }
    for name, ratio in ratios.items():
        if name != "pixelcnn":
            print(f"{name} speedup: {ratio:.1f}")
    if "pixelcnn" in ratios:
        print(f"speedup: {ratios['pixelcnn']:.1f}")


if __name__ == "__main__":
    main()
