"""Time per generator step of each GAN objective, relative to the non-saturating GAN, measured in one run.

    python benchmarks/gan_objectives.py                 # the digits experiments, 20 timed batches each, 3 repeats
    python benchmarks/gan_objectives.py --repeats 5 --device cuda

Each objective is its digits experiment (``experiments/digits_*.yaml``: the shipped networks, widths and d_steps),
trained by Lightning on the digits for 2 + ``--batches`` batches of 64. A callback times every training batch after
the first two (a D step, plus a G step on every d_steps-th), and the time per G step is the timed batches' total
over the G steps they took, so WGAN-GP's five critic steps per G step are counted in it. The penalties cost a
double backward through D (the gradient penalty also one more forward, on the interpolates); R1 reuses D's forward
on the real images. The objectives run interleaved, ``--repeats`` times each, and the median is kept, so a change in the machine's load
falls on all of them alike. The last line is ``wgan_gp: X`` (its time per G step over non-saturating's).
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from genzoo.data import DigitsDataModule

EXPERIMENTS = {  # name → (experiment, extra overrides)
    "non_saturating": ("digits_dcgan", []),
    "minimax": ("digits_dcgan", ["model.loss=minimax"]),
    "hinge_sn": ("digits_hinge_sn", []),
    "r1": ("digits_r1", []),
    "wgan_gp": ("digits_wgan_gp", []),
    "wgan_gp_k1": ("digits_wgan_gp", ["model.d_steps=1"]),  # the penalty's cost alone, one critic step per G step
    "resnet_hinge": ("digits_hinge_sn", ["model.arch=resnet"]),
}


SKIP = 2  # batches left untimed at the start of each measurement


class BatchTimer(pl.Callback):
    """Seconds in training batches and G steps taken, from batch ``skip`` on (the first ones pay for warm-up)."""

    def __init__(self, skip: int):
        self.skip, self.seconds, self.g_steps = skip, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start, self.g_before = time.perf_counter(), int(pl_module.g_step_count)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        if batch_idx >= self.skip:
            self.seconds += time.perf_counter() - self.start
            self.g_steps += int(pl_module.g_step_count) - self.g_before


def seconds_per_g_step(name: str, batches: int, device: str) -> float:
    experiment, overrides = EXPERIMENTS[name]
    with initialize_config_module(config_module="genzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    pl.seed_everything(0, verbose=False)
    model = instantiate(cfg.model)
    timer = BatchTimer(skip=SKIP)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=SKIP + batches, limit_val_batches=0, accelerator=device,
                         devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10, batch_size=64))
    return timer.seconds / timer.g_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20,
                        help="timed training batches per measurement, a multiple of 5 (the digits have 22 whole ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in EXPERIMENTS}
    for _ in range(args.repeats):
        for name in EXPERIMENTS:
            times[name].append(seconds_per_g_step(name, args.batches, args.device))
    base = statistics.median(times["non_saturating"])
    print(f"{'objective':<16}{'ms per G step':>14}{'× non-saturating':>18}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16}{1000 * median:>14.1f}{median / base:>18.2f}")
    print(f"wgan_gp: {statistics.median(times['wgan_gp']) / base:.2f}")


if __name__ == "__main__":
    main()
