"""GANs chosen and swept by FID, with the protocol beside every fidelity number: a two-trial ``dcgan_optuna`` search
through the installed ``genzoo-train`` (its best checkpoint per run, the value the search gets, the protocol in
metrics.json, W&B and the report), and genzoo-report on runs of different protocols."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from genzoo.callbacks import Fidelity
from genzoo.report import main as report

# val/fid by epoch (1-based), plus the real FID / 1000 so trials differ as their samples do: epoch 4 is the best of
# every run, neither the first nor the last computed one, so a checkpoint kept by any other rule is caught.
SCRIPT = {2: 30.0, 4: 10.0, 6: 20.0}
BEST_EPOCH = 3  # 0-based, as Lightning counts and metrics.jsonl writes
TINY_GAN = ["model.generator.width=8", "model.discriminator.width=8", "model.z_dim=8"]


@pytest.fixture(scope="module")
def search(cli, tmp_path_factory):
    """Six smoke epochs, val/fid every 2nd, two trials; the fidelity values of validation follow SCRIPT."""
    real = Fidelity.compute

    def scripted(self, trainer, pl_module, split):
        results = real(self, trainer, pl_module, split)
        if split == "val" and results is not None:
            results = {**results, "fid": SCRIPT[trainer.current_epoch + 1] + results["fid"] / 1000}
        return results

    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Fidelity, "compute", scripted)
        run = cli.train("-m", "hparams_search=dcgan_optuna", "hydra.sweeper.n_trials=2", "debug=smoke",
                        "trainer.max_epochs=6", "callbacks.fidelity.every_n_epochs=2", "callbacks.progress_bar=null",
                        "callbacks.sample_grid=null", "trainer.enable_model_summary=false", *TINY_GAN,
                        workdir=tmp_path_factory.mktemp("dcgan_search"))
    assert run.returncode == 0, run.tail()
    (sweep_dir,) = (run.output_dir / "sweeps").iterdir()
    return run, sweep_dir, json.loads((sweep_dir / "sweep.json").read_text())["jobs"]


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_gan_runs_best_checkpoint_is_the_epoch_of_its_lowest_val_fid_in_metrics_jsonl(search):
    _, sweep_dir, jobs = search
    for job in jobs:
        run_dir = sweep_dir / str(job["num"])
        lines = history(run_dir)
        computed = {line["epoch"]: line["val/fid"] for line in lines if "val/fid" in line}
        assert sorted(computed) == [1, 3, 5], "val/fid on the epochs it is computed, never a stale copy"
        best_epoch = min(computed, key=computed.get)
        assert best_epoch == BEST_EPOCH
        (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
        assert best.name == f"best-epoch{best_epoch:03d}.ckpt"
        assert torch.load(best, map_location="cpu", weights_only=True)["epoch"] == best_epoch
        final = json.loads((run_dir / "metrics.json").read_text())
        assert final["best_score"] == pytest.approx(computed[best_epoch], rel=1e-6)
        assert final["best_checkpoint"].endswith(best.name) and final["epochs"] == 6
        assert math.isfinite(final["test/fid"])  # the best checkpoint, tested


@pytest.mark.slow
def test_a_gan_search_optimises_the_best_val_fid_of_each_trial(search):
    _, sweep_dir, jobs = search
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    for job in jobs:
        best = min(line["val/fid"] for line in history(sweep_dir / str(job["num"])) if "val/fid" in line)
        assert job["value"] == pytest.approx(best, rel=1e-6)
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(j["value"] for j in jobs), rel=1e-6)  # minimize: mode min


@pytest.mark.slow
def test_the_protocol_stands_beside_the_fidelity_numbers_in_metrics_json_wandb_and_the_report(search, cli):
    _, sweep_dir, jobs = search
    run_dir = sweep_dir / str(jobs[0]["num"])
    final = json.loads((run_dir / "metrics.json").read_text())
    for stage in ("val", "test"):
        protocol = final[f"{stage}/fidelity_protocol"]
        assert protocol["extractor"] == "genzoo-domain-classifier" and len(protocol["weights"]) == 16
        assert (protocol["samples"], protocol["reference"], protocol["reference_size"]) == (180, f"digits {stage}", 180)
        assert protocol["classifier_acc"] == pytest.approx(final["test/classifier_acc"], abs=1e-4)
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    assert cli.wandb_summary(wandb_run)["summary"]["test/fidelity_protocol"] == final["test/fidelity_protocol"]

    assert report([str(sweep_dir), "--no-wandb"]) == 0
    rep = json.loads((sweep_dir / "report.json").read_text())
    assert "test/fid [P1]" in rep["columns"] and not any(c.startswith("test/fid [P2") for c in rep["columns"])
    (p1,) = [p for p in rep["protocols"] if p["tag"] == "P1"]
    assert p1["protocol"] == final["test/fidelity_protocol"]
    assert "180 generated vs 180 digits test" in p1["describe"]
    markdown = (sweep_dir / "report.md").read_text()
    assert "## Fidelity protocols" in markdown and f"| P1 | genzoo-domain-classifier | {p1['protocol']['weights']}" \
        in markdown


# ---- the report never averages numbers of different protocols ---------------------------------------------------
CLASSIFIER = {"extractor": "genzoo-domain-classifier", "weights": "a" * 16, "samples": 180, "reference": "digits test",
              "reference_size": 180}
INCEPTION = {**CLASSIFIER, "extractor": "inception-v3-compat", "weights": "b" * 16}
PUBLISHED = {"metric": "test/fid", "value": 3.0, "units": "FID", "data": "digits", "source": "a paper",
             "protocol": {"extractor": "LeNet", "samples": 1000, "reference": "digits test", "reference_size": 180}}


def write_run(folder, seed: int, fid: float, protocol: dict | None) -> None:
    folder.mkdir(parents=True)
    config = {"seed": seed, "published": [PUBLISHED], "model": {"_target_": "genzoo.models.DCGAN"},
              "data": {"shape": [1, 8, 8]}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    final = {"test/fid": fid, "test/kid": fid / 100, "epochs": 1,
             **({"test/fidelity_protocol": protocol} if protocol else {})}
    (folder / "metrics.json").write_text(json.dumps(final))


def test_report_gives_each_fidelity_protocol_its_own_column_and_never_averages_across_them(tmp_path):
    for num, (fid, protocol) in enumerate([(4.0, CLASSIFIER), (6.0, CLASSIFIER), (40.0, INCEPTION), (9.0, None)]):
        write_run(tmp_path / str(num), num, fid, protocol)
    assert report([str(tmp_path), "--no-wandb"]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    tags = {p["tag"]: p["protocol"] for p in rep["protocols"]}
    assert tags == {"P1": CLASSIFIER, "P2": INCEPTION, "no protocol": None}
    assert [c for c in rep["columns"] if c.startswith("test/fid")] == ["test/fid [P1]", "test/fid [P2]",
                                                                        "test/fid [no protocol]"]
    (row,) = rep["rows"]
    cells = {c: row["metrics"][c] for c in ("test/fid [P1]", "test/fid [P2]", "test/fid [no protocol]")}
    assert [(m["mean"], m["n"]) for m in cells.values()] == [(5.0, 2), (40.0, 1), (9.0, 1)]
    # the published number stands beside each of ours with both protocols, never beside a mix
    rows = [(p["our_protocol"], p["ours"]["mean"], p["their_protocol"]) for p in rep["published"]]
    assert [r[:2] for r in rows] == [("P1", 5.0), ("P2", 40.0), ("no protocol", 9.0)]
    assert all(r[2] == "LeNet, 1000 generated vs 180 digits test" for r in rows)
    markdown = (tmp_path / "report.md").read_text()
    assert "| P2 | inception-v3-compat | bbbbbbbbbbbbbbbb | 180 | digits test | 180 |" in markdown
