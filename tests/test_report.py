"""genzoo-report on a sweep folder written by hand: the grouping by swept keys, mean ± std over seeds, the published
numbers beside them, the PNGs, and the report files."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from genzoo.report import main

BIN = Path(sys.executable).parent
# (lr, seed) → final test/bpd; two groups of 3 and 2 seeds
TEST_BPD = {("1e-3", 0): 1.80, ("1e-3", 1): 1.78, ("1e-3", 2): 1.79, ("3e-4", 0): 2.00, ("3e-4", 1): 2.10}
PUBLISHED = [{"metric": "test/bpd", "value": 1.75, "units": "bits/dim", "data": "digits", "source": "a paper"},
             {"metric": "test/nats", "value": 80.0, "units": "nats per image", "data": "digits", "source": "a paper"}]


def write_run(folder: Path, lr: str, seed: int, overrides: bool) -> None:
    folder.mkdir(parents=True)
    config = {"seed": seed, "published": PUBLISHED,
              "model": {"_target_": "genzoo.models.PixelCNN", "lr": float(lr), "net": {"channels": 64}},
              "data": {"_target_": "genzoo.data.DigitsDataModule", "shape": [1, 8, 8], "levels": 17},
              "callbacks": {"linear_probe": {"seed": seed}},  # follows the seed: not a swept key
              "paths": {"run_dir": str(folder)}, "logger": {"wandb": {"id": f"id{seed}{lr}"}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    bpd = TEST_BPD[(lr, seed)]
    lines = [{"epoch": e, "step": 10 * (e + 1), "val/bpd": bpd + 1.0 / (e + 1), "train/loss": 2.0} for e in range(3)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {"test/bpd": bpd, "val/bpd": lines[-1]["val/bpd"], "probe/acc_1pct": 0.5 + seed / 10,
             "probe/acc_100pct": 0.9, "probe/raw_acc_1pct": 0.4, "probe/raw_acc_100pct": 0.95, "epochs": 3}
    (folder / "metrics.json").write_text(json.dumps(final))
    (folder / "samples").mkdir()
    for epoch in (1, 3):  # the report shows the latest grid
        Image.new("L", (34, 34), color=40 * epoch).save(folder / "samples" / f"epoch_{epoch:03d}.png")
    if overrides:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.lr={lr}", f"seed={seed}",
                                                                          "debug=smoke"]))


def write_sweep(root: Path, overrides: bool) -> Path:
    for num, (lr, seed) in enumerate(TEST_BPD):
        write_run(root / str(num), lr, seed, overrides)
    failed = {"num": 5, "status": "failed", "overrides": ["model.lr=-1"], "error": "model.lr=-1 is negative."}
    (root / "sweep.json").write_text(json.dumps({"jobs": [failed]}))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = write_sweep(tmp_path_factory.mktemp("sweep"), overrides=False)
    assert main([str(root), "--no-wandb"]) == 0
    return root, json.loads((root / "report.json").read_text())


def rows_by_lr(report: dict) -> dict[str, dict]:
    return {float(row["group"]["model.lr"]): row for row in report["rows"]}


def test_runs_are_grouped_by_the_config_keys_that_differ_with_seeds_averaged_over(report):
    _, rep = report
    assert rep["group_keys"] == ["model.lr"]
    rows = rows_by_lr(rep)
    assert sorted(rows) == [3e-4, 1e-3]
    assert rows[1e-3]["seeds"] == [0, 1, 2] and rows[3e-4]["seeds"] == [0, 1]


def test_table_holds_mean_and_sample_std_over_seeds(report):
    root, rep = report
    rows = rows_by_lr(rep)
    for lr, key in ((1e-3, "1e-3"), (3e-4, "3e-4")):
        values = [v for (l, _), v in TEST_BPD.items() if l == key]
        summary = rows[lr]["metrics"]["test/bpd"]
        assert summary["mean"] == pytest.approx(statistics.fmean(values))
        assert summary["std"] == pytest.approx(statistics.stdev(values))
        assert summary["n"] == len(values)
    assert rows[1e-3]["metrics"]["test/bpd"]["std"] == pytest.approx(0.01)
    markdown = (root / "report.md").read_text()
    assert "| 1.790 ± 0.010 |" in markdown and "| 2.050 ± 0.071 |" in markdown
    assert "probe/acc_1pct" in rep["columns"] and "probe/raw_acc_1pct" not in rep["columns"]
    assert rows[1e-3]["metrics"]["probe/acc_1pct"]["mean"] == pytest.approx(0.6)


def test_published_numbers_stand_beside_the_groups_own_with_nats_derived_from_bits_per_dim(report):
    _, rep = report
    rows = {(p["group"], p["metric"]): p for p in rep["published"]}
    bpd = rows[("0.001", "test/bpd")]
    assert bpd["value"] == 1.75 and bpd["ours"]["mean"] == pytest.approx(1.79) and bpd["source"] == "a paper"
    nats = rows[("0.001", "test/nats")]
    assert nats["ours"]["mean"] == pytest.approx(1.79 * 64 * math.log(2))


def test_report_lists_failed_jobs_and_writes_markdown_html_and_pngs(report):
    root, rep = report
    assert [j["num"] for j in rep["failed"]] == [5]
    html = (root / "report.html").read_text()
    assert "model.lr=-1 is negative." in html and "<table>" in html
    assert sorted(rep["plots"]) == ["curves.png", "probe.png", "samples.png"]
    for name in rep["plots"]:
        with Image.open(root / name) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200
        assert f"![{name}]({name})" in (root / "report.md").read_text()


def test_hydra_overrides_name_the_groups_when_every_run_has_them(tmp_path):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    out = tmp_path / "elsewhere"
    assert main([str(root), "--out", str(out), "--no-wandb"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["group_keys"] == ["model.lr"]  # debug=smoke is shared, seed= is averaged over
    assert sorted(row["group"]["model.lr"] for row in rep["rows"]) == ["1e-3", "3e-4"]
    assert not (root / "report.md").exists()


def test_installed_genzoo_report_logs_the_table_and_plots_to_an_offline_wandb_run(tmp_path, cli):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    env = cli.env(tmp_path)
    out = subprocess.run([str(BIN / "genzoo-report"), str(root), "--wandb"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 groups of 5 runs" in out.stdout
    (wandb_run,) = sorted(root.glob("wandb/offline-run-*"))
    assert list(wandb_run.glob("files/media/images/**/*.png")), "the plots go to W&B as images"
    assert list(wandb_run.glob("files/media/table/**/*.json")), "the table goes to W&B as a table"


def test_without_hydra_overrides_a_model_switch_groups_by_class_and_ignores_what_follows_from_it(tmp_path):
    root = tmp_path / "sweep"
    for num, (target, epochs, seed) in enumerate([("PixelCNN", 55, 0), ("PixelCNN", 55, 1), ("VAE", 40, 0)]):
        write_run(root / str(num), "1e-3", seed, overrides=False)
        config = yaml.safe_load((root / str(num) / "config.yaml").read_text())
        config["model"] = {"_target_": f"genzoo.models.{target}", f"only_{target}": 1}  # each class, its own keys
        config["trainer"] = {"max_epochs": epochs, "default_root_dir": str(root / str(num))}  # set by the model
        (root / str(num) / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([str(root), "--no-wandb"]) == 0
    rep = json.loads((root / "report.json").read_text())
    assert rep["group_keys"] == ["model"]
    assert [(row["label"], row["seeds"]) for row in rep["rows"]] == [("PixelCNN", [0, 1]), ("VAE", [0])]


def test_runs_that_never_finished_are_left_out_of_the_table_and_listed(tmp_path):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    killed = root / "9"  # stopped after two epochs: no metrics.json, a different (typo'd) key
    write_run(killed, "3e-4", 0, overrides=True)
    (killed / "metrics.json").unlink()
    (killed / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val/bpd": 3.0}) + "\n" for e in (0, 1)))
    (killed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model.lr=3e-4", "sede=0"]))
    failed = root / "5"  # the failed job of sweep.json: listed there already, not twice
    failed.mkdir()
    (failed / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    record = json.loads((root / "sweep.json").read_text())
    record["jobs"][0]["run_dir"] = str(failed)
    (root / "sweep.json").write_text(json.dumps(record))
    assert main([str(root), "--no-wandb"]) == 0
    rep = json.loads((root / "report.json").read_text())
    assert rep["group_keys"] == ["model.lr"]  # the killed run's 'sede' does not become a grouping key
    assert sorted(r["seeds"] for r in rep["rows"]) == [[0, 1], [0, 1, 2]]
    assert rep["unfinished"] == [{"run": str(killed), "epochs": 2}]
    assert "Left out: runs without final metrics" in (root / "report.md").read_text()
    # on its own, the killed run is reported, to watch its progress
    assert main([str(killed), "--no-wandb"]) == 0
    assert json.loads((killed / "report.json").read_text())["rows"][0]["runs"] == [str(killed)]

