"""The installed ``genzoo-train`` end to end: offline, on CPU, from a temporary folder, with ``debug=smoke``.

Each test runs the real console script as a subprocess and checks what it leaves behind: the run folder's files,
the offline W&B run, resuming, sweeps, two-process DDP, and the one-sentence errors of a wrong command.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DIGITS_LEVELS = 17


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def files_named(root: Path, name: str) -> list[Path]:
    """genzoo's own files called ``name`` under ``root`` (Hydra's ``.hydra/`` copies left out)."""
    return sorted(p for p in root.rglob(name) if ".hydra" not in p.parts)


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*"))


def assert_finite_number(value) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    assert math.isfinite(value), value
    return float(value)


# ---- one smoke run, inspected by several tests -------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(cli, tmp_path_factory):
    run = cli.train("debug=smoke", workdir=tmp_path_factory.mktemp("smoke"))
    assert run.returncode == 0, run.tail()
    return run


def test_smoke_run_prints_no_traceback_and_makes_one_run_folder(smoke):
    assert "Traceback" not in smoke.output
    assert len(smoke.run_dirs()) == 1
    assert files_named(smoke.output_dir, "config.yaml") == [smoke.run_dir() / "config.yaml"]


def test_run_folder_config_is_resolved_and_names_its_own_folder(smoke):
    run_dir = smoke.run_dir()
    text = (run_dir / "config.yaml").read_text()
    assert "${" not in text
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.model._target_ == "genzoo.models.PixelCNN"
    assert Path(cfg.paths.run_dir).resolve() == run_dir.resolve()
    assert cfg.model.levels == cfg.data.levels == DIGITS_LEVELS
    assert cfg.trainer.max_epochs == 1  # debug=smoke applied
    assert cfg.logger.wandb.id, "the W&B run id is saved so that resume= continues the same W&B run"


def test_run_folder_env_json_records_python_and_package_versions(smoke):
    env = json.loads((smoke.run_dir() / "env.json").read_text())
    assert env["python"] == platform.python_version()
    assert isinstance(env["packages"]["torch"], str) and env["packages"]["torch"]
    assert env["packages"]["genzoo"]
    assert "git_commit" in env


def test_metrics_jsonl_has_one_line_per_epoch_with_val_bpd(smoke):
    lines = read_jsonl(smoke.run_dir() / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [0]
    assert 0 < assert_finite_number(lines[0]["val/bpd"]) < math.log2(DIGITS_LEVELS) + 1
    assert lines[0]["step"] == 2  # debug=smoke: two training batches


def test_metrics_json_has_a_plausible_test_bpd_and_names_the_best_checkpoint(smoke):
    metrics = json.loads((smoke.run_dir() / "metrics.json").read_text())
    # an untrained softmax over 17 levels is near log2(17) ≈ 4.09 bits/dim; two batches cannot stray far from it
    assert 0 < assert_finite_number(metrics["test/bpd"]) < math.log2(DIGITS_LEVELS) + 1
    assert metrics["epochs"] == 1
    assert metrics["best_score"] == pytest.approx(metrics["val/bpd"])
    assert Path(metrics["best_checkpoint"]).parent == smoke.run_dir() / "checkpoints"


def test_checkpoints_hold_last_and_best_and_load_with_weights_only(smoke):
    import torch

    ckpts = smoke.run_dir() / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    assert (ckpts / "last.ckpt").is_file()
    assert len(best) == 1
    assert str(best[0]) == json.loads((smoke.run_dir() / "metrics.json").read_text())["best_checkpoint"]
    state = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert state["hyper_parameters"]["levels"] == DIGITS_LEVELS


def test_sample_grid_is_a_valid_png(smoke):
    pngs = sorted((smoke.run_dir() / "samples").glob("*.png"))
    assert pngs, "no sample grid under samples/"
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(pngs[0]) as image:
        image.verify()
    with Image.open(pngs[0]) as image:
        assert min(image.size) >= 32  # 8×8 digits are upscaled so the grid stays legible


def test_offline_wandb_run_is_written_in_the_run_folder(smoke):
    runs = wandb_runs(smoke.run_dir())
    assert len(runs) == 1
    assert len(list(runs[0].glob("run-*.wandb"))) == 1
    assert list(runs[0].glob("files/media/images/*.png")), "the sample grid was not sent to W&B"


def test_offline_wandb_run_holds_the_same_metrics_as_the_run_folder(smoke, cli):
    (wandb_run,) = wandb_runs(smoke.run_dir())
    summary = cli.wandb_summary(wandb_run)
    metrics = json.loads((smoke.run_dir() / "metrics.json").read_text())
    cfg = OmegaConf.load(smoke.run_dir() / "config.yaml")
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["run_id"] == cfg.logger.wandb.id
    assert assert_finite_number(summary["summary"]["val/bpd"]) == pytest.approx(metrics["val/bpd"])
    assert summary["summary"]["test/bpd"] == pytest.approx(metrics["test/bpd"])
    assert summary["config"]["model"]["_target_"] == "genzoo.models.PixelCNN"


# ---- two processes -----------------------------------------------------------------------------------------------
def test_ddp_cpu_trains_with_two_processes_into_one_run_folder(cli, tmp_path):
    run = cli.train("debug=smoke", "trainer=ddp_cpu", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    assert "GLOBAL_RANK: 1" in run.output and "distributed_backend=gloo" in run.output
    # the second rank re-runs the script; it must write into the first rank's folder, and only rank 0 writes files
    assert [p.name for p in (run.output_dir / "runs").iterdir()] == [run.run_dir().name]
    assert files_named(run.output_dir, "config.yaml") == [run.run_dir() / "config.yaml"]
    assert files_named(run.output_dir, "metrics.json") == [run.run_dir() / "metrics.json"]
    assert len(read_jsonl(run.run_dir() / "metrics.jsonl")) == 1
    assert len(wandb_runs(run.run_dir())) == 1
    metrics = json.loads((run.run_dir() / "metrics.json").read_text())
    assert 0 < assert_finite_number(metrics["test/bpd"]) < math.log2(DIGITS_LEVELS) + 1


# ---- resume ------------------------------------------------------------------------------------------------------
def test_resume_continues_a_run_in_its_own_folder_with_more_epochs(cli, tmp_path):
    first = cli.train("debug=smoke", workdir=tmp_path)
    assert first.returncode == 0, first.tail()
    run_dir = first.run_dir()

    second = cli.train(f"resume={run_dir}", "trainer.max_epochs=2", workdir=tmp_path)
    assert second.returncode == 0, second.tail()
    assert "Traceback" not in second.output
    assert files_named(tmp_path / "outputs", "config.yaml") == [run_dir / "config.yaml"], "resume made a new run"
    lines = read_jsonl(run_dir / "metrics.jsonl")
    assert [(line["epoch"], line["step"]) for line in lines] == [(0, 2), (1, 4)]  # steps go on from the checkpoint
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert math.isfinite(metrics["test/bpd"])
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.trainer.max_epochs == 2
    assert Path(cfg.resume) == run_dir / "checkpoints" / "last.ckpt"
    # the same W&B run id goes on (offline, W&B starts a second folder with that id)
    assert [p.name.rsplit("-", 1)[-1] for p in wandb_runs(run_dir)] == [cfg.logger.wandb.id] * 2

    # a checkpoint inside a run folder continues that run too
    third = cli.train(f"resume={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=3", workdir=tmp_path)
    assert third.returncode == 0, third.tail()
    assert [line["epoch"] for line in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_resume_from_a_bare_checkpoint_continues_in_a_new_run_folder(cli, smoke, tmp_path):
    ckpt = tmp_path / "elsewhere" / "model.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(smoke.run_dir() / "checkpoints" / "last.ckpt", ckpt)
    run = cli.train(f"resume={ckpt}", "debug=smoke", "trainer.max_epochs=2", workdir=tmp_path / "work")
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    run_dir = run.run_dir()
    assert [(line["epoch"], line["step"]) for line in read_jsonl(run_dir / "metrics.jsonl")] == [(1, 4)]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    assert Path(OmegaConf.load(run_dir / "config.yaml").resume) == ckpt
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_of_a_moved_run_folder_writes_into_its_new_place(cli, smoke, tmp_path):
    moved = tmp_path / "moved_run"
    shutil.copytree(smoke.run_dir(), moved)
    run = cli.train(f"resume={moved}", "trainer.max_epochs=2", workdir=tmp_path / "work")
    assert run.returncode == 0, run.tail()
    assert [line["epoch"] for line in read_jsonl(moved / "metrics.jsonl")] == [0, 1]
    assert [line["epoch"] for line in read_jsonl(smoke.run_dir() / "metrics.jsonl")] == [0]  # original untouched
    cfg = OmegaConf.load(moved / "config.yaml")
    assert Path(cfg.paths.run_dir) == moved and Path(cfg.callbacks.checkpoint.dirpath) == moved / "checkpoints"


def test_resume_refuses_to_switch_config_group(cli, smoke, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(smoke.run_dir(), moved)
    run = cli.train(f"resume={moved}", "model=gated_pixelcnn", workdir=tmp_path / "work")
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert "'model='" in run.stderr and "start a new run" in run.stderr, run.tail()
    assert "model=pixelcnn" in run.stderr, "the message names the choice the run was trained with"
    assert [line["epoch"] for line in read_jsonl(moved / "metrics.jsonl")] == [0]


# ---- a sweep -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(cli, tmp_path_factory):
    run = cli.train("-m", "model=pixelcnn,gated_pixelcnn", "debug=smoke", workdir=tmp_path_factory.mktemp("sweep"))
    assert run.returncode == 0, run.tail()
    return run


def test_multirun_puts_each_job_in_its_own_folder_under_one_sweep_folder(sweep):
    assert "Traceback" not in sweep.output
    (sweep_dir,) = (sweep.output_dir / "sweeps").iterdir()
    jobs = sorted(p.parent for p in sweep_dir.glob("*/config.yaml"))
    assert [p.name for p in jobs] == ["0", "1"]
    targets = [OmegaConf.load(job / "config.yaml").model._target_ for job in jobs]
    assert targets == ["genzoo.models.PixelCNN", "genzoo.models.GatedPixelCNN"]
    for job in jobs:
        assert Path(OmegaConf.load(job / "config.yaml").paths.run_dir) == job
        assert math.isfinite(json.loads((job / "metrics.json").read_text())["test/bpd"])
        assert (job / "checkpoints" / "last.ckpt").is_file()


def test_multirun_jobs_log_to_separate_wandb_runs_grouped_by_the_sweep(sweep, cli):
    (sweep_dir,) = (sweep.output_dir / "sweeps").iterdir()
    run_ids = []
    for job in (sweep_dir / "0", sweep_dir / "1"):
        (wandb_run,) = wandb_runs(job)
        summary = cli.wandb_summary(wandb_run)
        record = cli.wandb_run_record(wandb_run)
        metrics = json.loads((job / "metrics.json").read_text())
        # each W&B run holds its own job's numbers, not the first job's
        assert assert_finite_number(summary["summary"]["val/bpd"]) == pytest.approx(metrics["val/bpd"])
        assert summary["config"]["model"]["_target_"] == OmegaConf.load(job / "config.yaml").model._target_
        assert record["run_group"] == sweep_dir.name
        assert "model=" in record["display_name"]
        run_ids.append(summary["run_id"])
    assert len(set(run_ids)) == 2


# Mistakes (one sentence, a non-zero exit, nothing trained) are the catalogue of tests/test_bad_inputs.py.


# ---- other loggers, the module entry point, experiments -----------------------------------------------------------
def test_python_dash_m_without_a_logger_still_writes_the_run_folder(cli, tmp_path):
    run = cli.train("debug=smoke", "logger=none", workdir=tmp_path, module=True)
    assert run.returncode == 0, run.tail()
    assert "Traceback" not in run.output
    run_dir = run.run_dir()
    assert not (run_dir / "wandb").exists() and not (run_dir / "csv").exists()
    assert [line["epoch"] for line in read_jsonl(run_dir / "metrics.jsonl")] == [0]
    assert math.isfinite(json.loads((run_dir / "metrics.json").read_text())["test/bpd"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_csv_logger_writes_metrics_csv_in_the_run_folder(cli, tmp_path):
    run = cli.train("debug=smoke", "logger=csv", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    run_dir = run.run_dir()
    assert not (run_dir / "wandb").exists()
    header, *rows = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    assert "val/bpd" in columns and "test/bpd" in columns
    val = [row.split(",")[columns.index("val/bpd")] for row in rows]
    assert any(v and math.isfinite(float(v)) for v in val)
    assert not list(tmp_path.glob("lightning_logs")), "a logger wrote outside the run folder"


def test_experiment_selects_its_model(cli, tmp_path):
    run = cli.train("experiment=digits_gated_pixelcnn", "debug=smoke", "logger=none", workdir=tmp_path)
    assert run.returncode == 0, run.tail()
    cfg = OmegaConf.load(run.run_dir() / "config.yaml")
    assert cfg.model._target_ == "genzoo.models.GatedPixelCNN"
    assert cfg.model.levels == DIGITS_LEVELS


# ---- a plain install ships the config tree -----------------------------------------------------------------------
def _copy_source(src: Path, dst: Path) -> None:
    """The repository without its git data, build leftovers and run outputs (a stale build/ would leak in)."""
    top_level = {".git", "build", "dist", "outputs", "multirun", ".cache", "data", "wandb", ".pytest_cache", ".venv"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(folder) == src else set())

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


def test_wheel_ships_the_config_tree_and_experiments(tmp_path):
    source = tmp_path / "src"
    _copy_source(REPO, source)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)]
    # offline, build with this environment's setuptools; where it has none fit for the job, let pip fetch one
    build = subprocess.run([*pip_wheel, "--no-build-isolation"], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        build = subprocess.run(pip_wheel, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("genzoo-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for path in ("genzoo/conf/train.yaml", "genzoo/conf/model/pixelcnn.yaml",
                     "genzoo/conf/experiment/digits_pixelcnn.yaml", "genzoo/conf/experiment/digits_gated_pixelcnn.yaml",
                     "genzoo/conf/debug/smoke.yaml", "genzoo/conf/trainer/ddp_cpu.yaml"):
            assert path in names, f"{path} is missing from {wheel.name}"
        # conf/experiment is a link to ../experiments: the wheel must hold the files themselves
        shipped = zf.read("genzoo/conf/experiment/digits_pixelcnn.yaml").decode()
        assert shipped == (REPO / "experiments" / "digits_pixelcnn.yaml").read_text()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "genzoo-train = genzoo.train:main" in zf.read(entry_points).decode()
