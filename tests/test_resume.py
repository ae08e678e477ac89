"""Fault tolerance: a run killed at any moment continues exactly, and no checkpoint is ever half-written."""

from __future__ import annotations

import errno
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from inprocess import run_main
from omegaconf import OmegaConf

from genzoo.errors import GenzooError
from genzoo.resume.callbacks import ONE_CYCLE_LENGTH_KEYS, RngState
from genzoo.resume.sampler import ResumableSampler
from genzoo.run.checkpoints import AtomicCheckpointIO, find_checkpoint

# A small PixelCNN with dropout (so the restored RNG matters), checkpoints every 7 steps: 1437 digits in batches of
# 32 make 45 steps an epoch, so the step checkpoints of epoch 1 (49, 56, …, 84) all lie inside it.
STEPS_PER_EPOCH, EVERY = 45, 7
RUN = ["logger=csv", "test=false", "trainer.max_epochs=2", "data.batch_size=32", "model.net.channels=16",
       "model.net.blocks=2", "model.net.head_channels=16", "model.net.dropout=0.3", "callbacks.progress_bar=null",
       "trainer.enable_model_summary=false", f"callbacks.step_checkpoint.every_n_train_steps={EVERY}"]


def final_state(run_dir: Path) -> tuple[dict, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return metrics, weights


@pytest.mark.slow
def test_run_killed_mid_epoch_and_resumed_ends_as_an_uninterrupted_run(cli, tmp_path):
    whole = cli.train(*RUN, f"hydra.run.dir={tmp_path / 'whole'}", workdir=tmp_path)
    assert whole.returncode == 0, whole.tail()

    killed_dir = tmp_path / "killed"
    command = [f"hydra.run.dir={killed_dir}" if a.startswith("hydra.run.dir=") else a for a in whole.args]
    proc = subprocess.Popen(command, cwd=tmp_path, env=cli.env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(killed_dir.glob("checkpoints/step00000[4-9]*.ckpt")):  # a step checkpoint of epoch 1
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no step checkpoint appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ckpts = [*killed_dir.glob("checkpoints/step*.ckpt"), killed_dir / "checkpoints" / "last.ckpt"]
    newest = max((c for c in ckpts if c.is_file()), key=lambda c: c.stat().st_mtime_ns)
    step = torch.load(newest, weights_only=True)["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"killed at an epoch boundary ({newest.name}), not mid-epoch"
    for c in ckpts:  # every checkpoint on disk is whole, whatever moment the kill hit
        if c.is_file():
            torch.load(c, weights_only=True)

    resumed = cli.train(f"resume={killed_dir}", workdir=tmp_path)
    assert resumed.returncode == 0, resumed.tail()
    assert f"Restoring states from the checkpoint path at {newest}" in resumed.output

    (m_whole, w_whole), (m_resumed, w_resumed) = final_state(tmp_path / "whole"), final_state(killed_dir)
    assert m_resumed["steps"] == m_whole["steps"] == 2 * STEPS_PER_EPOCH
    for key in ("val/bpd", "train/loss_step"):
        assert m_resumed[key] == pytest.approx(m_whole[key], rel=1e-6, abs=1e-7), key
    for name, w in w_whole.items():
        torch.testing.assert_close(w_resumed[name], w, rtol=1e-6, atol=1e-7, msg=name)
    epochs = [json.loads(line)["epoch"] for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1], "one metrics line per epoch after a resume"


def test_resumable_sampler_replays_its_epoch_order_and_skips_what_was_trained():
    sampler = ResumableSampler(10, seed=3)
    sampler.set_epoch(4)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    assert list(sampler) == order, "an epoch's order is a function of (seed, epoch)"
    sampler.set_epoch(5)
    assert list(sampler) != order
    assert list(ResumableSampler(10, seed=4, epoch=lambda: 4)) != order, "the seed changes the order"

    sampler.skip(epoch=5, samples=6)
    assert list(sampler) == list(ResumableSampler(10, seed=3, epoch=lambda: 5))[6:]
    assert len(list(sampler)) == 10, "the skip applies to one iterator only"
    sampler.skip(epoch=4, samples=6)
    assert len(list(sampler)) == 10, "a skip saved in another epoch is ignored"


def test_resumable_sampler_splits_one_permutation_between_ranks():
    ranks = [list(ResumableSampler(11, seed=0, epoch=lambda: 2, num_replicas=3, rank=r)) for r in range(3)]
    assert {len(r) for r in ranks} == {4}, "every rank gets as many indices (padded by wrapping around)"
    together = [i for r in ranks for i in r]
    assert sorted(set(together)) == list(range(11)) and len(together) == 12


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn(3)  # a cached Gaussian is part of NumPy's state
    path = tmp_path / "rng.ckpt"
    AtomicCheckpointIO().save_checkpoint({"rng": RngState().state_dict()}, path)
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())

    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    RngState().load_state_dict(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected


def test_checkpoint_write_is_atomic_and_a_failed_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    # serialisation fails (an object torch cannot pickle): nothing on disk changes
    with pytest.raises(Exception):
        io.save_checkpoint({"step": 2, "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True)["step"] == 1

    # the disk fills while writing: one sentence, the old file intact, no temporary file left
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("genzoo.files.os.fsync", full)
    with pytest.raises(GenzooError, match=r"disk holding .*checkpoints is full.*last good checkpoint .*intact"):
        io.save_checkpoint({"step": 3, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_resume_picks_the_newer_of_the_epoch_and_step_checkpoints(tmp_path):
    ckpts = tmp_path.resolve() / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    for name in ("last.ckpt", "step0000049.ckpt"):
        (ckpts / name).write_bytes(b"x")
        time.sleep(0.01)
    assert find_checkpoint(tmp_path / "run") == (ckpts / "step0000049.ckpt", ckpts.parent)
    shutil.copy(ckpts / "step0000049.ckpt", ckpts / "last.ckpt")  # an epoch ended after the step checkpoint
    assert find_checkpoint(tmp_path / "run")[0] == ckpts / "last.ckpt"


def test_resume_from_a_truncated_checkpoint_stops_with_one_sentence(cli, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "global_step": 3}, whole)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    run = cli.train(f"resume={run_dir}", workdir=tmp_path / "work")
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert "last.ckpt is not a readable checkpoint" in run.stderr and "truncated" in run.stderr, run.tail()
    assert not list((tmp_path / "work").glob("outputs/runs/*/checkpoints/*")), "no new checkpoint was written"


# Every model of the zoo, through its digits experiment: none of them has resume code of its own, so this is what
# shows that the shared machinery covers model state outside the weights too (the GAN's noise, dropout masks, the
# autoencoder's sampling Gaussian, EMA and batch-norm statistics).
# Variants whose state is another experiment's (the same model class, options that add no RNG use or buffer) are
# covered by it: the planar flow by the IAF's, the conditional VAE by the VAE's.
COVERED = {"digits_vae_planar": "digits_vae_iaf", "digits_cvae": "digits_vae"}
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "experiments").glob("digits_*.yaml")
                     if p.stem not in COVERED)


def test_the_resume_test_covers_every_model_config():
    models = {entry["override /model"] for e in EXPERIMENTS
              for entry in OmegaConf.load(Path(__file__).parents[1] / "experiments" / f"{e}.yaml").defaults
              if "override /model" in entry}
    shipped = {p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml")}
    assert models == shipped, f"models without a digits experiment to resume: {shipped - models}"


SMALL_NETS = {
    "digits_pixelcnn": ["model.net.channels=16", "model.net.blocks=2", "model.net.head_channels=32"],
    "digits_gated_pixelcnn": ["model.net.channels=16", "model.net.layers=2", "model.net.head_channels=32"],
    "digits_row_lstm": ["model.net.hidden=8", "model.net.layers=2", "model.net.head_channels=32"],
    "digits_diagonal_bilstm": ["model.net.hidden=8", "model.net.layers=2", "model.net.head_channels=32"],
    "digits_pixelcnn_pp": ["model.net.channels=8", "model.net.resnets=1"],
    "digits_vae": ["model.net.channels=8"],
    "digits_vae_iaf": ["model.net.channels=8", "model.flow_hidden=16"],  # the flow's draws and weights resume too
    "digits_autoencoder": ["model.net.channels=8"],
    "digits_dcgan": ["model.generator.width=16", "model.discriminator.width=16"],
    # restart_after=3: a code restarted (from the batch, by the RNG) inside the resumed stretch
    "digits_vqvae": ["model.net.channels=8", "model.net.resblocks=1", "model.codebook_size=16", "model.code_dim=4",
                     "model.restart_after=3"],
    "digits_vqvae_prior": ["model.vqvae_dir={vqvae}", "model.prior.net.channels=8", "model.prior.net.layers=2",
                           "model.prior.net.head_channels=16"],
    "digits_wgan_gp": ["model.generator.width=8", "model.discriminator.width=8"],
    "digits_hinge_sn": ["model.generator.width=8", "model.discriminator.width=8"],
    "digits_r1": ["model.generator.width=8", "model.discriminator.width=8"],
}


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory) -> Path:
    """A first stage for the second stage's resume: one smoke epoch of a small VQ-VAE."""
    work = tmp_path_factory.mktemp("vqvae")
    result = run_main("genzoo-train", ["experiment=digits_vqvae", *SMALL_NETS["digits_vqvae"], "debug=smoke",
                                       "logger=csv", "callbacks.fidelity=null", "test=false",
                                       f"hydra.run.dir={work / 'first'}"], work)
    assert result.code == 0
    return work / "first"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_model_resumed_from_a_mid_epoch_checkpoint_ends_with_the_same_weights(tmp_path, experiment,
                                                                                    request):
    # 6 batches an epoch (12 optimiser steps for the GAN), a step checkpoint every 2 optimiser steps; small networks
    # (exactness does not depend on their size), both processes run in this one (the imports are paid once)
    first_stage = {"vqvae": request.getfixturevalue("vqvae_run")} if experiment.endswith("_prior") else {}
    run = [f"experiment={experiment}", *(a.format(**first_stage) for a in SMALL_NETS[experiment]), "logger=csv", "test=false", "trainer.max_epochs=2", "callbacks.fidelity=null",
           "callbacks.progress_bar=null", "+trainer.limit_train_batches=6", "+trainer.limit_val_batches=1",
           "trainer.enable_model_summary=false", "callbacks.step_checkpoint.every_n_train_steps=2",
           "callbacks.step_checkpoint.save_top_k=-1"]
    whole = run_main("genzoo-train", [*run, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)
    assert whole.code == 0
    steps = sorted((tmp_path / "whole" / "checkpoints").glob("step*.ckpt"))
    middle = steps[len(steps) // 2 + 1]  # inside the second epoch, not at its start
    assert torch.load(middle, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1

    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    for c in (tmp_path / "resumed" / "checkpoints").iterdir():
        if c.name != middle.name:
            c.unlink()
    resumed = run_main("genzoo-train", [f"resume={tmp_path / 'resumed'}"], tmp_path)
    assert resumed.code == 0
    batches = torch.load(middle, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert 0 < batches["completed"] < 6, f"{middle.name} lies at an epoch boundary"
    (m_whole, w_whole), (m_resumed, w_resumed) = final_state(tmp_path / "whole"), final_state(tmp_path / "resumed")
    assert w_whole.keys() == w_resumed.keys()
    for name, w in w_whole.items():  # parameters and buffers (EMA generator, batch-norm and code statistics)
        torch.testing.assert_close(w_resumed[name], w, rtol=1e-6, atol=1e-7, msg=name)
    monitor = OmegaConf.load(tmp_path / "whole" / "config.yaml").model.monitor
    if monitor is not None:
        assert m_resumed[monitor] == pytest.approx(m_whole[monitor], rel=1e-6)


# ---- resume= in the run's own folder: the CSV history, times, step checkpoints, a finished run -------------------
# Three smoke epochs of two batches, a step checkpoint every 3 steps: step0000003.ckpt lies inside epoch 1.
SHORT = ["debug=smoke", "logger=csv", "test=false", "trainer.max_epochs=3", "callbacks.progress_bar=null",
         "callbacks.step_checkpoint.every_n_train_steps=3", "callbacks.step_checkpoint.save_top_k=-1"]
ELAPSED = 1000.0  # the wall time the resumed checkpoint says the run had taken


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_cells(path: Path) -> dict[tuple[int, str], list[float]]:
    """(step, metric) → every value the CSV holds for it."""
    cells: dict[tuple[int, str], list[float]] = {}
    for row in read_csv(path):
        for key, value in row.items():
            if key not in ("step", "epoch") and value:
                cells.setdefault((int(row["step"]), key), []).append(float(value))
    return cells


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def interrupted(cli, tmp_path_factory):
    """A run left alone (``whole``) and a copy of it as a process killed after step 3 would leave it, resumed from
    its step checkpoint (``resumed``): its CSV and metrics.jsonl already hold rows past step 3, as a killed process
    writes them, and the checkpoint says the run had taken ELAPSED seconds."""
    tmp = tmp_path_factory.mktemp("interrupted")
    whole = cli.train(*SHORT, f"hydra.run.dir={tmp / 'whole'}", workdir=tmp)
    assert whole.returncode == 0, whole.tail()
    run_dir = tmp / "resumed"
    shutil.copytree(tmp / "whole", run_dir)
    for c in (run_dir / "checkpoints").iterdir():
        if c.name != "step0000003.ckpt":
            c.unlink()
    source = run_dir / "checkpoints" / "step0000003.ckpt"
    ckpt = torch.load(source, weights_only=True)
    states = {k: v for k, v in ckpt["callbacks"].items() if k.startswith("MetricsFile")}
    timed = bool(states) and all("elapsed_s" in v for v in states.values())
    for state in states.values():
        state["elapsed_s"] = ELAPSED
    torch.save(ckpt, source)
    # the saved choice logger=csv named again, and the step checkpoint kept from now on as the config says
    resumed = cli.train(f"resume={source}", "logger=csv", "callbacks.step_checkpoint.save_top_k=1", workdir=tmp)
    assert resumed.returncode == 0, resumed.tail()
    return {"tmp": tmp, "whole": tmp / "whole", "run_dir": run_dir, "resumed": resumed, "timed": timed}


def test_resumed_csv_log_keeps_the_first_process_history_and_logs_the_rest_beside_it(interrupted):
    first = interrupted["run_dir"] / "csv" / "version_0" / "metrics.csv"
    second = interrupted["run_dir"] / "csv" / "version_1" / "metrics.csv"
    assert "Previous log files" not in interrupted["resumed"].output
    assert csv_cells(first) == csv_cells(interrupted["whole"] / "csv" / "version_0" / "metrics.csv"), \
        "the interrupted process's rows were changed"
    expected, cells = csv_cells(interrupted["whole"] / "csv" / "version_0" / "metrics.csv"), csv_cells(second)
    assert min(step for step, _ in cells) == 3, "the resumed process logs from the step it continues at"
    for (step, key), values in cells.items():
        assert len(values) == 1, f"logged twice: {(step, key)}"
        if (step, key) == (3, "train/loss_epoch"):
            continue  # Lightning's epoch mean after a mid-epoch resume averages only the batches after it
        assert values == [pytest.approx(expected[step, key][0], rel=1e-5)], (step, key)
    assert set(cells) == {cell for cell in expected if cell[0] >= 3}


def test_resumed_times_add_to_the_time_the_checkpoint_carries(interrupted):
    assert interrupted["timed"], "the checkpoint holds no MetricsFile state with the elapsed time"
    lines = [json.loads(line) for line in (interrupted["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert lines[0]["time_s"] < ELAPSED, "the line written before the checkpoint keeps its time"
    assert all(ELAPSED < line["time_s"] < ELAPSED + 600 for line in lines[1:]), lines
    metrics = json.loads((interrupted["run_dir"] / "metrics.json").read_text())
    assert ELAPSED < metrics["fit_time_s"] < ELAPSED + 600


def test_testing_the_best_checkpoint_does_not_count_its_time_a_second_time(tmp_path):
    from types import SimpleNamespace

    from genzoo.callbacks import MetricsFile

    clock = MetricsFile(str(tmp_path))
    clock.start -= 5.0  # this process has run for 5 s
    clock.load_state_dict({"elapsed_s": 1000.0})  # Lightning restores the best checkpoint's state to test it
    assert 5.0 <= clock.elapsed() < 60.0, "a test pass took over the checkpoint's time"
    clock.load_state_dict({"elapsed_s": 1000.0})  # a fit that resumes from it goes on with it
    clock.on_fit_start(SimpleNamespace(ckpt_path="last.ckpt"), None)
    assert 1005.0 <= clock.elapsed() < 1060.0


def test_one_cycle_schedule_keeps_its_length_in_the_keys_a_resume_drops():
    """torch has no public way to lengthen a OneCycleLR; a resume drops these keys of its state (ScheduleLength).
    When torch renames them, this fails before any resumed run steps past the end of its schedule."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    state = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10).state_dict()
    assert set(ONE_CYCLE_LENGTH_KEYS) <= set(state), f"torch {torch.__version__} keeps OneCycleLR's length elsewhere"
    longer = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100)
    longer.load_state_dict({k: v for k, v in state.items() if k not in ONE_CYCLE_LENGTH_KEYS})
    assert longer.total_steps == 100


def test_resumed_run_keeps_only_the_newest_step_checkpoint(interrupted):
    names = sorted(p.name for p in (interrupted["run_dir"] / "checkpoints").glob("step*.ckpt"))
    assert names == ["step0000006.ckpt"]
    # a copy elsewhere is another run: its files stay
    assert (interrupted["whole"] / "checkpoints" / "step0000003.ckpt").is_file()


def test_resume_runs_in_the_run_folder_and_makes_no_new_one(interrupted):
    assert not (interrupted["tmp"] / "outputs").exists(), sorted((interrupted["tmp"] / "outputs").rglob("*"))
    run_dir = interrupted["run_dir"]
    # .hydra/ keeps the choices the run was started with, which a later resume= compares group choices with
    assert not any("resume=" in o for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))


def test_resume_of_a_finished_run_says_so_and_leaves_the_run_alone(cli, interrupted):
    run_dir = interrupted["run_dir"]
    before = snapshot(run_dir)
    run = cli.train(f"resume={run_dir}", workdir=interrupted["tmp"])
    assert run.returncode == 0 and "Traceback" not in run.output, run.tail()
    message = [line for line in run.stderr.splitlines() if "nothing left to train" in line]
    assert len(message) == 1 and "trainer.max_epochs" in message[0], run.tail()
    assert "Restoring states" not in run.output and "Testing" not in run.output
    assert snapshot(run_dir) == before, "a finished run's files changed"
    assert not (interrupted["tmp"] / "outputs").exists()


def test_resume_refuses_another_group_choice_and_names_the_saved_one(cli, interrupted):
    run_dir = interrupted["run_dir"]
    before = snapshot(run_dir)
    run = cli.train(f"resume={run_dir / 'checkpoints' / 'step0000006.ckpt'}", "logger=wandb", "trainer.max_epochs=4",
                    workdir=interrupted["tmp"])
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert "'logger='" in run.stderr and "logger=csv" in run.stderr and "start a new run" in run.stderr, run.tail()
    assert snapshot(run_dir) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_trainer_without_a_gpu_stops_with_one_sentence(cli, tmp_path):
    run = cli.train("debug=smoke", "trainer=gpu", workdir=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert "No supported gpu backend" not in run.output, run.tail()
    message = [line for line in run.stderr.splitlines() if "no CUDA GPU" in line or "has none" in line]
    assert len(message) == 1 and "trainer=default" in message[0] and message[0].rstrip().endswith("."), run.tail()
    assert not list(tmp_path.rglob("*.ckpt")) and not run.run_dirs(), "a run folder was written"
