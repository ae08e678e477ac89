"""genzoo-eval and genzoo-sample end to end, and the Fidelity callback inside a training run: the installed
scripts, offline, on a one-epoch digits run. A tiny domain classifier (two epochs) keeps them fast; it is trained
once in the shared cache folder and reused by every later command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
TINY = "+callbacks.fidelity.classifier_config={epochs:2,width:8}"
TINY_EVAL = "+fidelity.classifier_config={epochs:2,width:8}"
KEYS = ("test/fid", "test/is", "test/kid", "test/precision", "test/recall", "test/fid_floor", "test/classifier_acc")


@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory):
    run = cli.train("debug=smoke", "logger=csv", TINY, "callbacks.fidelity.every_n_epochs=1",
                    workdir=tmp_path_factory.mktemp("eval"))
    assert run.returncode == 0, run.tail()
    return run


@pytest.fixture(scope="module")
def evaluated(cli, trained):
    run = cli.script("genzoo-eval", f"ckpt={trained.run_dir()}", TINY_EVAL, workdir=trained.workdir)
    assert run.returncode == 0, run.tail()
    return run


def eval_metrics(run) -> dict:
    [path] = run.output_dir.glob("evals/*/metrics.json")
    return json.loads(path.read_text())


def test_a_training_run_logs_fidelity_metrics_to_metrics_json(trained):
    metrics = json.loads((trained.run_dir() / "metrics.json").read_text())
    for key in KEYS:
        assert math.isfinite(metrics[key]), key
    [epoch] = [json.loads(line) for line in (trained.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(epoch["val/fid"]) and math.isfinite(epoch["val/fid_floor"]), "every_n_epochs=1: val too"
    assert 0 <= metrics["test/precision"] <= 1 and metrics["test/is"] >= 1


def test_eval_writes_metrics_in_its_folder_and_a_copy_under_the_run(trained, evaluated):
    metrics = eval_metrics(evaluated)
    assert "Training the domain classifier" not in evaluated.output, "the cached classifier was trained again"
    for key in (*KEYS, "test/bpd"):
        assert math.isfinite(metrics[key]), key
    [folder] = evaluated.output_dir.glob("evals/*/")
    assert list(folder.glob("wandb/offline-run-*/run-*.wandb")), "genzoo-eval logged nothing to W&B"
    copies = list((trained.run_dir() / "evals").glob("*/metrics.json"))
    assert len(copies) == 1 and json.loads(copies[0].read_text()) == metrics
    # the same checkpoint, seed and n as the training run's test: the same samples, the same numbers
    at_training = json.loads((trained.run_dir() / "metrics.json").read_text())
    assert metrics["test/fid"] == pytest.approx(at_training["test/fid"], rel=1e-5)


def test_eval_under_ddp_cpu_gives_the_single_process_result(cli, trained, evaluated):
    run = cli.script("genzoo-eval", f"ckpt={trained.run_dir()}", TINY_EVAL, "trainer=ddp_cpu", "logger=csv",
                     workdir=trained.workdir / "ddp")
    assert run.returncode == 0, run.tail()
    assert "GLOBAL_RANK: 1" in run.output
    single, ddp = eval_metrics(evaluated), eval_metrics(run)
    for key in KEYS:
        assert ddp[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key


def test_sample_writes_a_grid_and_the_integer_samples(cli, trained):
    run = cli.script("genzoo-sample", f"ckpt={trained.run_dir()}", "n=10", workdir=trained.workdir)
    assert run.returncode == 0, run.tail()
    [folder] = run.output_dir.glob("samples/*/")
    samples = np.load(folder / "samples.npz")["samples"]
    assert samples.shape == (10, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16
    assert Image.open(folder / "samples.png").size[0] > 8


# Mistakes with a trained run (a corrupt checkpoint, a missing ckpt=, an override of the run's model or data) are
# cases of the catalogue in tests/test_bad_inputs.py.
