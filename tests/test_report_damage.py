"""genzoo-report on damaged run folders: each one is left out of the table with one line naming the file and what is
wrong, the good runs beside it keep exactly the numbers they have alone, and nothing ends in a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_report import BIN, write_run, write_sweep

from genzoo.report import main

AS_ROOT = os.geteuid() == 0  # permissions do not stop root from reading


def table(report: dict) -> list[tuple]:
    """The table's rows with each run named by its folder, so that two sweep trees can be compared."""
    return [(row["label"], row["seeds"], [Path(p).name for p in row["runs"]], row["metrics"])
            for row in report["rows"]]


def report_of(root: Path, *args: str) -> dict:
    assert main([str(root), "--no-wandb", *args]) == 0
    return json.loads((root / "report.json").read_text())


@pytest.fixture(scope="module")
def clean_table(tmp_path_factory) -> list[tuple]:
    return table(report_of(write_sweep(tmp_path_factory.mktemp("clean") / "sweep", overrides=True)))


def outlier_run(root: Path) -> Path:
    """A finished run of the lr=1e-3 group whose test/bpd (9.0) would move that group's mean if it were averaged
    in, and whose extra metric would add a column."""
    folder = root / "7"
    write_run(folder, "1e-3", 0, overrides=True)
    final = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**final, "test/bpd": 9.0, "test/fid": 3.0}))
    return folder


def put(name: str, content: str | bytes):
    """A damage: ``name`` in the run folder replaced by ``content``."""
    def damage(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def cut_last_line(folder: Path) -> None:
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "step": 40, "val/b')  # a kill in the middle of the fourth epoch's line


def cut_middle_line(folder: Path) -> None:
    # a torn line that a later process appended after without its newline
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20] + lines[2] + "\n")


def edit_config(**changes):
    def damage(folder: Path) -> None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        config.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del config[key]
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return damage


def lose_metrics_of_completed_job(folder: Path) -> None:
    (folder / "metrics.json").unlink()
    record = json.loads((folder.parent / "sweep.json").read_text())
    record["jobs"].append({"num": 7, "status": "completed", "overrides": [], "run_dir": str(folder), "error": None})
    (folder.parent / "sweep.json").write_text(json.dumps(record))


def link_to_nowhere(name: str | None):
    def damage(folder: Path) -> None:
        if name is None:  # the run folder itself: moved away, its link left behind
            shutil.rmtree(folder)
            folder.symlink_to(folder.parent.parent / "moved-away")
        else:
            (folder / name).unlink()
            (folder / name).symlink_to(folder.parent.parent / "moved-away.yaml")
    return damage


def cut_image(folder: Path) -> None:
    grid = folder / "samples" / "epoch_003.png"
    grid.write_bytes(grid.read_bytes()[:60])


def give_back_permissions(folder: Path) -> None:
    """Undo :func:`unreadable`, so that pytest can remove the temporary folder."""
    if not folder.is_symlink():
        folder.chmod(0o755)
        for path in folder.iterdir():
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)


def metrics_json_a_folder(folder: Path) -> None:
    (folder / "metrics.json").unlink()
    (folder / "metrics.json").mkdir()


def unreadable(name: str | None):
    def damage(folder: Path) -> None:
        os.chmod(folder if name is None else folder / name, 0)
    return damage


needs_non_root = pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their permissions")
DAMAGES = [
    pytest.param(cut_last_line, r"metrics\.jsonl line 4 is cut off \(the run was stopped while writing it",
                 id="metrics.jsonl-last-line-cut"),
    pytest.param(cut_middle_line, r"metrics\.jsonl line 2 of 2 is not valid JSON \(.+ at column \d+\)$",
                 id="metrics.jsonl-middle-line-cut"),
    pytest.param(put("metrics.jsonl", '{"epoch": 0}\n[1, 2]\n'),
                 r"metrics\.jsonl line 2 holds a list, not a mapping of metrics$", id="metrics.jsonl-not-mappings"),
    pytest.param(put("metrics.jsonl", '{"step": 10}\n'), r"metrics\.jsonl line 1 has no whole-number epoch$",
                 id="metrics.jsonl-without-epoch"),
    pytest.param(put("config.yaml", ""), r"config\.yaml is empty$", id="config.yaml-empty"),
    pytest.param(put("config.yaml", "# nothing yet\n"), r"config\.yaml holds no values", id="config.yaml-comments"),
    pytest.param(put("config.yaml", "seed: [0\nmodel: {lr: 1\n"),
                 r"config\.yaml is not valid YAML \(.+ at line \d+\)$", id="config.yaml-not-yaml"),
    pytest.param(put("config.yaml", "- seed: 0\n"), r"config\.yaml holds a list, not a mapping of config keys$",
                 id="config.yaml-not-a-mapping"),
    pytest.param(edit_config(seed=None), r"config\.yaml has no seed", id="config.yaml-without-seed"),
    pytest.param(edit_config(seed="zero"), r"config\.yaml's seed is text \('zero'\), not a whole number$",
                 id="config.yaml-seed-not-a-number"),
    pytest.param(edit_config(published=[{"metric": "test/bpd"}]),
                 r"config\.yaml's published entry 1 lacks a metric name or a numeric value$",
                 id="config.yaml-published-without-value"),
    pytest.param(edit_config(data={"shape": "8x8"}), r"config\.yaml's data\.shape is '8x8', not a list",
                 id="config.yaml-shape-not-a-list"),
    pytest.param(put("metrics.json", ""), r"metrics\.json is empty$", id="metrics.json-empty"),
    pytest.param(put("metrics.json", '{"test/bpd": 9.0,'),
                 r"metrics\.json is not valid JSON \(.+ at line 1, column \d+\)$", id="metrics.json-not-json"),
    pytest.param(put("metrics.json", "[9.0]"), r"metrics\.json holds a list, not a mapping of metric names",
                 id="metrics.json-not-a-mapping"),
    pytest.param(put("metrics.json", "{}"), r"metrics\.json holds no metrics", id="metrics.json-no-metrics"),
    pytest.param(put("metrics.json", '{"test/bpd": "low", "epochs": 3}'),
                 r"metrics\.json's test/bpd is text \(\"low\"\), not a number$", id="metrics.json-text-value"),
    pytest.param(put("metrics.json", '{"test/bpd": 1.8, "epochs": null}'),
                 r"metrics\.json's epochs is nothing \(null\), not a number$", id="metrics.json-null-value"),
    pytest.param(lose_metrics_of_completed_job,
                 r"metrics\.json is missing, though sweep\.json records the job as completed$",
                 id="metrics.json-lost-after-the-job-completed"),
    pytest.param(put("config.yaml", b"seed: 0\nname: caf\xe9\n"),
                 r"config\.yaml is not UTF-8 text \(byte 0xe9 at offset 17\)$", id="config.yaml-not-utf8"),
    pytest.param(put("metrics.jsonl", b'{"epoch": 0, "\xff": 1}\n'),
                 r"metrics\.jsonl is not UTF-8 text \(byte 0xff at offset 14\)$", id="metrics.jsonl-not-utf8"),
    pytest.param(put(".hydra/overrides.yaml", "- model.lr=1e-3\n- [seed=0\n"),
                 r"\.hydra/overrides\.yaml is not valid YAML \(.+\)$", id="overrides.yaml-not-yaml"),
    pytest.param(put(".hydra/overrides.yaml", "model.lr: 1e-3\n"),
                 r"\.hydra/overrides\.yaml holds a mapping, not a list of overrides$", id="overrides.yaml-mapping"),
    pytest.param(put(".hydra/overrides.yaml", ""), r"\.hydra/overrides\.yaml is empty$", id="overrides.yaml-empty"),
    pytest.param(put(".hydra/overrides.yaml", "- model.lr=1e-3\n- 7\n"),
                 r"\.hydra/overrides\.yaml entry 2 is a number, not an override", id="overrides.yaml-not-text"),
    pytest.param(link_to_nowhere(None), r"it is a link to .+moved-away, which does not exist$",
                 id="run-folder-link-to-nowhere"),
    pytest.param(link_to_nowhere("config.yaml"), r"config\.yaml is a link to .+moved-away\.yaml, which does not",
                 id="config.yaml-link-to-nowhere"),
    pytest.param(cut_image, r"samples/epoch_003\.png is not a readable image \(.+\)$", id="sample-grid-cut"),
    pytest.param(metrics_json_a_folder, r"metrics\.json is a folder, not a file$", id="metrics.json-a-folder"),
    pytest.param(unreadable("config.yaml"), r"config\.yaml cannot be read: permission denied$",
                 id="config.yaml-unreadable", marks=needs_non_root),
    pytest.param(unreadable("metrics.jsonl"), r"metrics\.jsonl cannot be read: permission denied$",
                 id="metrics.jsonl-unreadable", marks=needs_non_root),
    pytest.param(unreadable(None), r"the folder cannot be read: permission denied$",
                 id="run-folder-unreadable", marks=needs_non_root),
]


@pytest.fixture
def no_plots(monkeypatch):
    """The plots see only the runs that enter the table (drawn in test_report and the installed-script test here);
    without them each report takes a third of the time."""
    import genzoo.report_plots as plots

    for name in ("plot_curves", "plot_samples", "plot_probe"):
        monkeypatch.setattr(plots, name, lambda groups, path: None)


@pytest.mark.parametrize("damage, reason", DAMAGES)
def test_a_damaged_run_is_left_out_with_its_reason_and_never_averaged_in(tmp_path, clean_table, no_plots, damage,
                                                                         reason):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    damaged = outlier_run(root)
    damage(damaged)
    try:
        rep = report_of(root)
    finally:
        give_back_permissions(damaged)
    assert [u["run"] for u in rep["unreadable"]] == [str(damaged)]
    assert re.match(reason, rep["unreadable"][0]["reason"]), rep["unreadable"][0]["reason"]
    assert table(rep) == clean_table  # the same groups, seeds, runs, columns and numbers as without it
    markdown = (root / "report.md").read_text()
    assert "## Left out: folders that cannot be read wholly" in markdown
    assert f"| {damaged} | {rep['unreadable'][0]['reason']} |" in markdown


def test_a_diverged_value_and_text_fields_of_metrics_json_are_not_damage(tmp_path):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    final = json.loads((root / "0" / "metrics.json").read_text())
    final.update({"test/bpd": "nan", "best_checkpoint": "checkpoints/epoch_002.ckpt"})  # as genzoo writes them
    (root / "0" / "metrics.json").write_text(json.dumps(final))
    rep = report_of(root)
    assert rep["unreadable"] == []
    row = next(r for r in rep["rows"] if r["label"] == "1e-3")
    assert row["seeds"] == [0, 1, 2] and row["metrics"]["test/bpd"]["n"] == 2  # no number, none made up


def test_a_damaged_sweep_record_is_named_and_the_runs_are_still_reported(tmp_path, clean_table):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    (root / "sweep.json").write_text('{"jobs": [{"num": 5, "sta')
    rep = report_of(root)
    assert table(rep) == clean_table and rep["failed"] == []
    (entry,) = rep["unreadable"]
    assert entry["run"] == str(root)
    assert re.match(r"sweep\.json is not valid JSON \(.+\): its failed and completed jobs are not known$",
                    entry["reason"])


def test_when_every_run_is_damaged_the_report_lists_them_under_left_out_and_exits_non_zero(tmp_path, capsys):
    root = tmp_path / "sweep"
    for num in range(2):
        put("config.yaml", "")(write_run_folder(root / str(num)))
    assert main([str(root), "--no-wandb"]) == 1
    rep = json.loads((root / "report.json").read_text())
    assert rep["rows"] == [] and [u["reason"] for u in rep["unreadable"]] == ["config.yaml is empty"] * 2
    markdown = (root / "report.md").read_text()
    assert "No run folder could be read wholly" in markdown and f"| {root / '1'} | config.yaml is empty |" in markdown
    err = capsys.readouterr().err
    assert f"left out {root / '0'}: config.yaml is empty" in err and "no run folder under" in err


def write_run_folder(folder: Path) -> Path:
    write_run(folder, "1e-3", 0, overrides=True)
    return folder


def test_a_run_folder_given_on_its_own_that_is_damaged_is_left_out_too(tmp_path):
    folder = write_run_folder(tmp_path / "run")
    cut_last_line(folder)
    assert main([str(folder), "--no-wandb"]) == 1
    rep = json.loads((folder / "report.json").read_text())
    assert rep["rows"] == [] and rep["unreadable"][0]["reason"].startswith("metrics.jsonl line 4 is cut off")


@pytest.mark.parametrize("make, says", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_text("x"), p)[1], "is a file, not a folder"),
    (lambda p: (p.mkdir(), p)[1], "no run folders (folders with a config.yaml) under"),
], ids=["missing", "a-file", "no-run-folders"])
def test_a_path_without_run_folders_gives_one_sentence_and_a_non_zero_exit(tmp_path, capsys, make, says):
    path = make(tmp_path / "given")
    with pytest.raises(SystemExit) as exit:
        main([str(path), "--no-wandb"])
    message = str(exit.value.code) if isinstance(exit.value.code, str) else capsys.readouterr().err
    assert exit.value.code != 0 and says in message
    assert "Traceback" not in message


def test_a_report_that_cannot_be_written_says_where_and_what_to_do(tmp_path):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit:
        main([str(root), "--out", str(tmp_path / "a-file" / "report"), "--no-wandb"])
    assert re.match(r"genzoo-report: cannot write the report to .+a-file/report \(not a directory\): give --out",
                    str(exit.value.code))


def test_installed_genzoo_report_on_damaged_folders_exits_cleanly_and_lists_them(tmp_path, cli):
    root = write_sweep(tmp_path / "sweep", overrides=True)
    damages = {"7": cut_last_line, "8": put("config.yaml", ""), "9": put("metrics.json", "{"),
               "10": put("config.yaml", b"\xff\xfe"), "11": link_to_nowhere(None)}
    for name, damage in damages.items():
        damage(write_run_folder(root / name))
    (root / "12").symlink_to(root / "12")  # a loop of links
    (root / "up").symlink_to(root)  # searched, and its sweep.json read, once
    out = subprocess.run([str(BIN / "genzoo-report"), str(root), "--no-wandb"], capture_output=True, text=True,
                         env=cli.env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert "2 groups of 5 runs" in out.stdout
    left_out = [line for line in out.stderr.splitlines() if line.startswith("left out ")]
    assert [line.split(":")[0] for line in left_out] == [f"left out {root / n}" for n in [*damages, "12"]]
    assert f"left out {root / '8'}: config.yaml is empty" in left_out
    markdown = (root / "report.md").read_text()
    assert all(f"| {root / n} | " in markdown for n in damages)
    assert markdown.count("| #5 |") == 1
