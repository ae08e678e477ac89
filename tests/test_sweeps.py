"""Sweeps through the installed ``genzoo-train -m``: a failing job is recorded and the others go on, the sweep exits
non-zero naming it; an Optuna search tells the study which trials failed and records its best trial."""

from __future__ import annotations

import importlib.resources
import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

SEARCHES = sorted(p.name[:-5] for p in (importlib.resources.files("genzoo.conf") / "hparams_search").iterdir()
                  if p.name.endswith(".yaml"))

SMALL = ["debug=smoke", "model.net.channels=8", "model.net.head_channels=16", "callbacks.fidelity=null"]


def read_sweep(run) -> tuple:
    (sweep_dir,) = (run.output_dir / "sweeps").iterdir()
    return sweep_dir, json.loads((sweep_dir / "sweep.json").read_text())


# ---- a grid sweep whose first job fails -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(cli, tmp_path_factory):
    # model.lr=1e9 blows the first job up: its loss is NaN at the second step, a GenzooError while its W&B run is
    # open, which must not leak into the next job's
    # a process of its own: what a sweep prints last, and its exit code, are what the user sees at its end
    return cli.train("-m", "model.lr=1e9,3e-3", *SMALL, workdir=tmp_path_factory.mktemp("grid"), process=True)


def test_grid_sweep_with_a_failed_job_exits_non_zero_naming_it_without_a_traceback(grid):
    assert grid.returncode != 0, grid.tail()
    assert "Traceback" not in grid.output, grid.tail()
    last_line = grid.stderr.strip().splitlines()[-1]
    assert "1 of 2 sweep jobs failed" in last_line and "#0 (model.lr=1000000000.0)" in last_line, grid.tail()
    assert "#1" not in last_line


def test_grid_sweep_records_every_job_and_the_failure_in_the_sweep_folder(grid):
    sweep_dir, record = read_sweep(grid)
    assert [(j["num"], j["status"]) for j in record["jobs"]] == [(0, "failed"), (1, "completed")]
    failed = record["jobs"][0]
    assert "model.lr=1000000000.0" in failed["overrides"] and "The training loss became nan" in failed["error"]
    assert (sweep_dir / "failed.txt").read_text().startswith("#0\tmodel.lr=1000000000.0")
    assert math.isfinite(record["jobs"][1]["value"])  # the monitored val/bpd that genzoo-train returned


def test_the_job_after_the_failed_one_keeps_its_results_and_its_own_wandb_run(grid, cli):
    sweep_dir, record = read_sweep(grid)
    job = sweep_dir / "1"
    metrics = json.loads((job / "metrics.json").read_text())
    assert math.isfinite(metrics["test/bpd"]) and (job / "checkpoints" / "last.ckpt").is_file()
    assert metrics["val/bpd"] == pytest.approx(record["jobs"][1]["value"])
    (wandb_run,) = sorted(job.glob("wandb/offline-run-*"))
    summary, run = cli.wandb_summary(wandb_run), cli.wandb_run_record(wandb_run)
    assert summary["summary"]["val/bpd"] == pytest.approx(metrics["val/bpd"])
    assert run["run_group"] == sweep_dir.name  # one W&B group per sweep
    assert "model.lr=0.003" in run["display_name"]  # the job's overrides name its run
    (failed_run,) = sorted((sweep_dir / "0").glob("wandb/offline-run-*"))
    failed = cli.wandb_summary(failed_run)
    assert failed["state"] == "failed" and failed["run_id"] != summary["run_id"]


# ---- a Bayesian search ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search(cli, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("optuna")
    # TPE searches model.lr and model.levels; levels=5 fails. Seed 3 draws 17, 5, 17 with optuna 2.10 (the plugin
    # pins optuna<3): a failed trial between two that complete. The study lives in SQLite to be read back.
    run = cli.train("-m", "hparams_search=pixelcnn_optuna", "hydra.sweeper.n_trials=3", "seed=3",
                    f"hydra.sweeper.storage=sqlite:///{workdir}/study.db", "logger=csv", *SMALL,
                    "model.net.dropout=0.1", "model.weight_decay=0.1", "model.levels=choice(17,5)", workdir=workdir,
                    process=True)
    return run, workdir


def test_optuna_search_runs_its_trials_and_records_the_best_completed_one(search):
    run, _ = search
    sweep_dir, record = read_sweep(run)
    assert "Traceback" not in run.output, run.tail()
    assert len(record["jobs"]) == 3
    completed = [j for j in record["jobs"] if j["status"] == "completed"]
    assert len(completed) == 2, run.tail()
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    winner = min(completed, key=lambda j: j["value"])  # model.mode=min → minimize
    assert best["best_value"] == pytest.approx(winner["value"])
    assert f"model.lr={best['best_params']['model.lr']}" in winner["overrides"]
    assert best["best_params"]["model.levels"] == 17


def test_optuna_search_tells_the_study_which_trials_failed_and_exits_non_zero_naming_them(search):
    optuna = pytest.importorskip("optuna")
    run, workdir = search
    _, record = read_sweep(run)
    study = optuna.load_study(study_name="pixelcnn", storage=f"sqlite:///{workdir}/study.db")
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["FAIL" if j["status"] == "failed" else "COMPLETE" for j in record["jobs"]]
    assert "FAIL" in states
    assert run.returncode != 0
    failed = [j["num"] for j in record["jobs"] if j["status"] == "failed"]
    assert all(f"#{n} (" in run.stderr.strip().splitlines()[-1] for n in failed), run.tail()


def test_search_whose_every_trial_fails_ends_with_the_list_not_a_traceback(cli, tmp_path):
    # An in-memory study: no best trial to ask for once both trials have failed (levels=5 contradicts the digits).
    run = cli.train("-m", "hparams_search=pixelcnn_optuna", "hydra.sweeper.n_trials=2", "logger=csv", *SMALL,
                    "model.levels=5", workdir=tmp_path, process=True)
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert "2 of 2 sweep jobs failed" in run.stderr.strip().splitlines()[-1], run.tail()
    _, record = read_sweep(run)
    assert [j["status"] for j in record["jobs"]] == ["failed", "failed"]


@pytest.mark.parametrize("name", SEARCHES)
def test_search_config_optimises_the_models_monitor_over_keys_the_model_has(name):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_module("genzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.max_failure_rate == 1.0
    assert sweeper.direction == {"min": "minimize", "max": "maximize"}[cfg.model.mode]
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{name} searches {key}, which the config does not have"
