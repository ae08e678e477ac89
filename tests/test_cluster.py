"""Clusters: parallel launchers keep the basic launcher's records, a pre-empted submitit job requeues and ends as an
uninterrupted one, a joblib job claims its own GPU, and torchrun's two processes give trainer=ddp_cpu's metrics."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from inprocess import run_main, sentences
from omegaconf import OmegaConf

from genzoo.run.gpus import claim_gpu, gpu_order, needs_own_gpu
from genzoo.run.requeue import requeue_count
from genzoo.sweeps import SweepRecord

BIN = Path(sys.executable).parent
# 3 epochs of 4 batches, a step checkpoint every 2 steps; job 1 (lr 1e9) fails with a NaN loss at its second step
RUN = ["debug=smoke", "trainer.max_epochs=3", "trainer.limit_train_batches=4", "model.net.channels=8",
       "model.net.blocks=1", "model.net.head_channels=16", "model.net.dropout=0.3", "callbacks.fidelity=null",
       "callbacks.progress_bar=null", "callbacks.sample_grid=null", "trainer.enable_model_summary=false",
       "callbacks.step_checkpoint.every_n_train_steps=2", "trainer.torch_threads=1", "model.lr=3e-3,1e9"]


def sweep_of(workdir: Path) -> tuple[Path, dict]:
    (sweep_dir,) = (workdir / "outputs" / "sweeps").iterdir()
    return sweep_dir, json.loads((sweep_dir / "sweep.json").read_text())


def outcome(record: dict) -> list[tuple]:
    return [(j["num"], j["status"], j["value"], j["error"]) for j in record["jobs"]]


@pytest.fixture(scope="module")
def sweeps(cli, tmp_path_factory):
    """The same two-job sweep under the basic, joblib and submitit_local launchers; submitit's job 0 is sent
    SIGUSR2, submitit's time-limit and pre-emption signal, once its first step checkpoint is on disk."""
    tmp = tmp_path_factory.mktemp("launchers")
    runs = {}
    for name, launcher in (("submitit", "submitit_local"), ("joblib", "joblib")):
        work = tmp / name
        work.mkdir()
        extra = ["logger=wandb"] if name == "joblib" else ["logger=csv"]
        command = [str(BIN / "genzoo-train"), "-m", f"hydra/launcher={launcher}", *RUN, *extra,
                   f"paths.data_dir={work / 'data'}", f"paths.cache_dir={work / 'cache'}"]
        runs[name] = (work, subprocess.Popen(command, cwd=work, env=cli.env(work), stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
    work, proc = runs["submitit"]
    deadline, signalled = time.time() + 600, None
    while signalled is None and time.time() < deadline and proc.poll() is None:
        job = next(iter((work / "outputs" / "sweeps").glob("*/0")), None)
        if job is not None and list(job.glob("checkpoints/step*.ckpt")):
            try:  # the job's process holds its run folder and names itself in the lock file
                signalled = json.loads((job / ".lock").read_text())["pid"]
            except ValueError:  # being written
                continue
            os.kill(signalled, signal.SIGUSR2)
        time.sleep(0.005)
    basic = cli.train("-m", *RUN, "logger=csv", workdir=tmp / "basic")  # in this process, meanwhile
    done = {"basic": basic}
    for name, (work, proc) in runs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = (work, proc.returncode, out, err)
    done["signalled"] = signalled
    return done


def test_parallel_launchers_record_every_job_as_the_basic_launcher_does(sweeps):
    basic = sweeps["basic"]
    assert basic.returncode != 0, basic.tail()
    basic_dir, expected = sweep_of(basic.workdir)
    assert [j["status"] for j in expected["jobs"]] == ["completed", "failed"]
    for name in ("joblib", "submitit"):
        work, code, out, err = sweeps[name]
        sweep_dir, record = sweep_of(work)
        assert outcome(record) == [pytest.approx(o) for o in outcome(expected)], (name, err[-3000:])
        assert code != 0 and "Traceback" not in err, (name, err[-3000:])
        assert "1 of 2 sweep jobs failed" in err.strip().splitlines()[-1] and "#1 (" in err.strip().splitlines()[-1]
        (failed,) = (sweep_dir / "failed.txt").read_text().splitlines()
        assert failed.startswith("#1\t") and "model.lr=1000000000.0" in failed and "loss became nan" in failed
        for job in record["jobs"]:
            assert Path(job["run_dir"]) == sweep_dir / str(job["num"])


def test_joblib_jobs_log_to_their_own_wandb_runs_in_the_sweeps_group(sweeps, cli):
    work, *_ = sweeps["joblib"]
    sweep_dir, _ = sweep_of(work)
    states = []
    for num in (0, 1):
        (run,) = sorted((sweep_dir / str(num)).glob("wandb/offline-run-*"))
        assert cli.wandb_run_record(run)["run_group"] == sweep_dir.name
        states.append(cli.wandb_summary(run)["state"])
    assert states == ["finished", "failed"]


def test_submitit_job_stopped_by_its_signal_is_requeued_and_ends_as_an_uninterrupted_run(sweeps):
    assert sweeps["signalled"] is not None, "job 0 ended before its first step checkpoint could be interrupted"
    work, *_ = sweeps["submitit"]
    sweep_dir, _ = sweep_of(work)
    basic_dir, _ = sweep_of(sweeps["basic"].workdir)
    requeued, whole = (json.loads((d / "0" / "metrics.json").read_text()) for d in (sweep_dir, basic_dir))
    assert (requeued["requeues"], whole["requeues"]) == (1, 0)
    assert requeued["steps"] == whole["steps"] == 12
    for key in ("val/bpd", "test/bpd", "train/loss_step"):
        assert requeued[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-7), key
    w_requeued, w_whole = (torch.load(d / "0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                           for d in (sweep_dir, basic_dir))
    for name, w in w_whole.items():
        torch.testing.assert_close(w_requeued[name], w, rtol=1e-6, atol=1e-7, msg=name)
    lines = [json.loads(line)["epoch"] for line in (sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [0, 1, 2]


def test_a_requeued_job_whose_run_is_finished_ends_well_and_counts_the_requeue(sweeps, cli):
    work, *_ = sweeps["submitit"]
    sweep_dir, _ = sweep_of(work)
    job = sweep_dir / "0"
    before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file() and p.name != "metrics.json"
              and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"}
    # SLURM_RESTART_COUNT: how SLURM tells a job that it was requeued
    run = cli.train(f"hydra.run.dir={job}", workdir=work, extra_env={"SLURM_RESTART_COUNT": "2"})
    assert run.returncode == 0 and "nothing left to train" in run.stderr, run.tail()
    assert json.loads((job / "metrics.json").read_text())["requeues"] == 2
    assert {p: p.read_bytes() for p in before} == before


# ---- records written by jobs that end at the same instant --------------------------------------------------------
def write_record(sweep_dir: str, num: int, barrier) -> None:
    record = SweepRecord()
    record.sweep_dir, record.sweeper, record.launcher_pid = Path(sweep_dir), "basic", -1
    barrier.wait()
    record.record({"num": num, "overrides": [f"seed={num}"], "status": "failed" if num % 3 == 0 else "completed",
                   "value": None, "error": "x" if num % 3 == 0 else None, "run_dir": "", "host": "h"})


def test_jobs_ending_at_the_same_instant_are_all_in_sweep_json(tmp_path):
    n = 12
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=write_record, args=(str(tmp_path), i, barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert [j["num"] for j in record["jobs"]] == list(range(n)) and record["n_failed"] == 4
    assert [line.split("\t")[0] for line in (tmp_path / "failed.txt").read_text().splitlines()] == \
        ["#0", "#3", "#6", "#9"]


# ---- one GPU per joblib job ----------------------------------------------------------------------------------------
def test_a_job_tries_its_number_mod_the_gpus_first_then_the_next_ones():
    assert gpu_order(0, 4) == [0, 1, 2, 3] and gpu_order(5, 4) == [1, 2, 3, 0] and gpu_order(3, 1) == [0]


def test_running_jobs_hold_different_gpus_and_a_freed_gpu_is_taken_again(tmp_path):
    with claim_gpu(tmp_path, 0, 2) as a, claim_gpu(tmp_path, 2, 2) as b:  # job 2 would be on GPU 0: it is taken
        assert (a, b) == (0, 1)
        with claim_gpu(tmp_path, 4, 2) as c:  # more jobs than GPUs: the job's own, shared
            assert c == 0
    with claim_gpu(tmp_path, 3, 2) as d:
        assert d == 1


@pytest.mark.parametrize("launcher, gpus, trainer, expected", [
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 2, {}, True),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 1, {}, False),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 4, {"accelerator": "cpu"}, False),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", 4, {"devices": 2}, False),
    ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", 4, {}, False),
    ("hydra_plugins.genzoo_launcher.SubmititLocal", 4, {}, False)])
def test_only_joblib_jobs_asking_for_one_gpu_on_a_machine_with_several_claim_one(launcher, gpus, trainer, expected):
    cfg = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1, **trainer}})
    assert needs_own_gpu(cfg, launcher, gpus) is expected


def test_requeue_count_is_the_larger_of_genzoos_and_slurms():
    assert requeue_count({}) == 0
    assert requeue_count({"GENZOO_REQUEUES": "2", "SLURM_RESTART_COUNT": "1"}) == 2
    assert requeue_count({"SLURM_RESTART_COUNT": "3"}) == 3


# ---- a missing plugin, several processes without one folder ---------------------------------------------------------
@pytest.mark.parametrize("launcher, extra", [("joblib", "cluster"), ("submitit_slurm", "cluster"), ("ray", "ray")])
def test_a_launcher_whose_plugin_is_missing_gets_one_sentence_naming_the_extra(launcher, extra, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr("genzoo.run.command_line.find_spec", lambda name: None)
    result = run_main("genzoo-train", ["-m", f"hydra/launcher={launcher}", "seed=0,1"], tmp_path, capsys)
    (line,) = sentences(result.err)
    assert result.code != 0 and f"hydra/launcher={launcher} needs" in line and f"'.[{extra}]'" in line, line
    assert not (tmp_path / "outputs").exists()


def test_processes_started_by_torchrun_without_one_run_folder_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_main("genzoo-train", ["trainer=ddp_cpu"], tmp_path, capsys)
    (line,) = sentences(result.err)
    assert result.code != 0 and "torchrun started 2 processes" in line and "hydra.run.dir=" in line, line


# ---- torchrun ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_synced_metrics_of_ddp_cpu(cli, tmp_path):
    tiny = ["debug=smoke", "trainer=ddp_cpu", "logger=csv", "callbacks.fidelity=null", "callbacks.sample_grid=null",
            "model.net.channels=8", "model.net.blocks=1", "model.net.head_channels=16",
            "callbacks.progress_bar=null", "trainer.enable_model_summary=false"]
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    run_dir = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m",
               "genzoo.train", *tiny, *paths,
               f"hydra.run.dir={run_dir}"]
    elastic = subprocess.Popen(command, cwd=tmp_path, env=cli.env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lightning = cli.train(*tiny, f"hydra.run.dir={tmp_path / 'ddp_cpu'}", workdir=tmp_path)
    out, _ = elastic.communicate(timeout=300)
    assert elastic.returncode == 0 and lightning.returncode == 0, (out[-3000:], lightning.tail())
    assert "GLOBAL_RANK: 1" in out and "Traceback" not in out, out[-3000:]
    elastic_m, lightning_m = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, tmp_path / "ddp_cpu"))
    for key in ("test/bpd", "val/bpd"):
        assert elastic_m[key] == pytest.approx(lightning_m[key], rel=1e-6), key
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "config.yaml").is_file()) == ["ddp_cpu", "torchrun"]
    assert not (tmp_path / "outputs").exists(), "a rank made a run folder of its own"


@pytest.mark.parametrize("environ, trainer, message", [
    ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1"}, {"devices": 4}, r"--ntasks-per-node=4"),
    ({"SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "1"}, {"devices": 4, "num_nodes": 2}, r"trainer\.num_nodes=1"),
    ({"SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2"}, {"devices": 4, "num_nodes": 2}, None),
    ({}, {"devices": 4}, None),  # not under SLURM
    ({"SLURM_NTASKS_PER_NODE": "1"}, {"devices": 1, "strategy": "auto"}, None)])  # one process, no DDP
def test_srun_tasks_that_do_not_match_the_trainers_devices_are_refused(environ, trainer, message):
    from genzoo.errors import GenzooError
    from genzoo.run.process import check_slurm_tasks

    cfg = OmegaConf.create({"trainer": {"strategy": "ddp", "num_nodes": 1, **trainer}})
    if message is None:
        check_slurm_tasks(cfg, environ)
    else:
        with pytest.raises(GenzooError, match=message):
            check_slurm_tasks(cfg, environ)
