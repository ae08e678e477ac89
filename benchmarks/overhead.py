"""What genzoo's training loop costs over a plain PyTorch loop, in training steps per second.

    python benchmarks/overhead.py              # full run, a few minutes on 2 CPU cores
    python benchmarks/overhead.py --quick      # tiny step counts, a smoke check (~30 s)

Two loops train the same network on the same batches:

* plain:  ``model.loss(x, y)``, ``backward``, AdamW + OneCycleLR steps, a bare for-loop over the DataLoader that
  genzoo's ``ImageDataModule.train_dataloader`` builds;
* genzoo: ``pytorch_lightning.Trainer.fit(model, datamodule=...)`` as ``genzoo-train`` builds the trainer (CPU, one
  device, 32-bit, ``log_every_n_steps=10``) minus what a benchmark must not time: no logger, progress bar,
  checkpointing, model summary or validation. The same ``GenerativeModel.training_step`` and
  ``configure_optimizers`` run as in a real run.

Each run builds the model from the same seed, so both loops draw the same shuffles and dropout masks; the final
weights of the two loops are compared to check that they really did the same work. A run is timed from the end of
its last warm-up step to the end of its last step (an epoch boundary inside the window counts, as it does in
training); ``trainer.fit``'s start-up (setup, dataloader, optimiser) is reported apart as "startup". Repeats
alternate plain, genzoo, plain, genzoo, ... so drift in the machine's load hits both alike.

Reading the table: "plain/s" and "genzoo/s" are medians of steps per second; "extra ms" is what genzoo's loop
adds to a step (1000/genzoo - 1000/plain); "ratio" is genzoo/plain, the median over the plain/genzoo pairs, each
pair's ratio listed last. 1.0 means no overhead, 0.95 a step 5% longer. The Python that Lightning and
``training_step`` run costs about 1 ms per step at any size, so it shows most where a step is cheapest; the rest
of "extra ms" comes from the memory allocator (below). "startup" is the time from building the Trainer to the
start of its loop. Two threads on two cores stall badly when anything else runs: a run whose plain repeats
spread by more than 10% is marked noisy; run it again on an idle machine.

On CPU the 28x28 step spends about a third of its time in page faults, because glibc hands the large freed
tensors back to the kernel every step, and genzoo's loop spends 10-30 ms more per step there. Setting
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` high (or another allocator) makes both loops faster and
the gap about 1 ms: compare only runs made under the same environment.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from importlib.resources import files

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from genzoo.data import DigitsDataModule, ImageDataModule
from genzoo.models import PixelCNN

# The shipped model config, less what the data fills in and what only the run uses.
_MODEL = OmegaConf.load(files("genzoo.conf") / "model" / "pixelcnn.yaml")
PIXELCNN = {k: _MODEL[k] for k in _MODEL if k not in ("_target_", "shape", "levels", "num_classes", "monitor", "mode")}


class SyntheticDataModule(ImageDataModule):
    """28x28 grey images of random 8-bit noise: the cost of a step does not depend on the pixel values."""

    NAME, SHAPE, LEVELS, NUM_CLASSES = "synthetic", (1, 28, 28), 256, 0

    def __init__(self, n: int = 2048, **kwargs):
        super().__init__(self.SHAPE, self.LEVELS, self.NUM_CLASSES, **kwargs)
        self.n = n

    def load_splits(self):
        images = torch.randint(self.LEVELS, (self.n, *self.SHAPE), generator=torch.Generator().manual_seed(0))
        return {"train": (images.to(torch.uint8), torch.full((self.n,), -1))}


# name: (datamodule, model hyper-parameters, (warm-up, timed) steps in full mode, in quick mode)
SIZES = {
    "digits 8x8 b64": (
        lambda: DigitsDataModule(shape=(1, 8, 8), levels=17, num_classes=10, batch_size=64),
        PIXELCNN, (5, 100), (2, 10),
    ),
    # Narrower than the config: at width 96 a step takes seconds on 2 cores; 256 levels keep the paper's softmax.
    "synthetic 28x28 b128": (
        lambda: SyntheticDataModule(batch_size=128),
        {**PIXELCNN, "net": {**PIXELCNN["net"], "channels": 32, "head_channels": 128}}, (3, 20), (1, 3),
    ),
}


def build_model(datamodule: ImageDataModule, hparams: dict) -> PixelCNN:
    torch.manual_seed(0)  # same initial weights, then the same shuffles and dropout masks in both loops
    return PixelCNN(datamodule.shape, datamodule.levels, datamodule.num_classes, **hparams)


def plain_loop(model: PixelCNN, datamodule: ImageDataModule, total: int) -> tuple[list[float], float]:
    """Step end times of a bare loop; Lightning's order: forward, zero_grad, backward, optimizer and lr step."""
    opt = torch.optim.AdamW(model.parameters(), lr=model.lr, weight_decay=model.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=model.lr, total_steps=total)
    datamodule.trainer = None  # a loader of its own: no Trainer's epoch counter from an earlier repeat
    loader = datamodule.train_dataloader()
    model.train()
    times: list[float] = []
    epoch = 0
    while len(times) < total:
        loader.sampler.set_epoch(epoch)  # what Lightning does: each epoch its own (seed, epoch) permutation
        epoch += 1
        for x, y in loader:
            loss = model.loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            times.append(time.perf_counter())
            if len(times) == total:
                break
    return times, 0.0  # nothing to start up


class StepClock(pl.Callback):
    """Records when training starts and when each step ends."""

    def __init__(self):
        self.start, self.times = 0.0, []

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter())


def genzoo_loop(model: PixelCNN, datamodule: ImageDataModule, total: int) -> tuple[list[float], float]:
    """Step end times under ``Trainer.fit``, and the seconds from building the Trainer to the start of its loop."""
    clock = StepClock()
    built = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_steps=total, log_every_n_steps=10,
            limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[clock], default_root_dir=root,
        )
        trainer.fit(model, datamodule=datamodule)
    return clock.times, clock.start - built


def weights_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


def run_size(name: str, repeats: int, steps: int | None, quick: bool, threads: int) -> dict:
    make_data, hparams, full, small = SIZES[name]
    warmup, timed = small if quick else full
    timed = steps or timed
    datamodule = make_data()
    rates: dict[str, list[float]] = {"plain": [], "genzoo": []}
    checksums: dict[str, list[float]] = {"plain": [], "genzoo": []}
    startups = []
    for _ in range(repeats):
        for label, loop in (("plain", plain_loop), ("genzoo", genzoo_loop)):
            model = build_model(datamodule, hparams)
            times, startup = loop(model, datamodule, warmup + timed)
            rates[label].append(timed / (times[-1] - times[warmup - 1]))
            checksums[label].append(weights_checksum(model))
            if label == "genzoo":
                startups.append(startup)
            if torch.get_num_threads() != threads:
                raise RuntimeError(f"the {label} loop changed torch's thread count to {torch.get_num_threads()}")
    ratios = [g / p for g, p in zip(rates["genzoo"], rates["plain"])]
    same = all(abs(g - p) <= 1e-4 * abs(p) for g, p in zip(checksums["genzoo"], checksums["plain"]))
    plain, genzoo = statistics.median(rates["plain"]), statistics.median(rates["genzoo"])
    return dict(name=name, steps=timed, plain=plain, genzoo=genzoo, extra_ms=1000 / genzoo - 1000 / plain,
                ratio=statistics.median(ratios), ratios=ratios, startup=statistics.median(startups), same=same,
                # The same work timed twice should agree; a wide spread means other work shared the cores.
                noisy=max(rates["plain"]) > 1.1 * min(rates["plain"]))

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="plain/genzoo pairs per size (>= 1; default 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run, for every size "
                        "(default: 100 on digits, 20 on 28x28)")
    parser.add_argument("--quick", action="store_true", help="tiny step counts: a smoke check, not a measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    args = parser.parse_args()
    if args.repeats < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--repeats and --steps must be at least 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    # Lightning's start-up chatter and its "few dataloader workers" hint would bury the table.
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning|lightning")

    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, {threads} torch threads, "
          f"{args.repeats} repeats{' (quick)' if args.quick else ''}")
    header = (f"{'size':<22}{'steps':>6}{'plain/s':>9}{'genzoo/s':>10}{'extra ms':>10}{'ratio':>7}{'startup':>9}"
              "  ratio of each repeat")
    print(header + "\n" + "-" * len(header))
    for name in args.sizes:
        r = run_size(name, args.repeats, args.steps, args.quick, threads)
        notes = " ".join(f"{x:.3f}" for x in r["ratios"])
        notes += "  (noisy: plain repeats differ by >10%)" if r["noisy"] else ""
        notes += "" if r["same"] else "  (final weights differ: not the same work!)"
        print(f"{name:<22}{r['steps']:>6}{r['plain']:>9.2f}{r['genzoo']:>10.2f}{r['extra_ms']:>10.1f}"
              f"{r['ratio']:>7.3f}{r['startup']:>8.2f}s  {notes}", flush=True)

if __name__ == "__main__":
    main()
