"""The catalogue of bad inputs and faults, as a new user meets them: one table, run through one helper.

Each case is a command line of an entry point, what must come of it — refused with one sentence matching a
pattern, accepted, or accepted with a warning matching one — and what must not exist afterwards: a refused command
leaves no run folder, no W&B run and no checkpoint, and a refused command against an existing run changes none of
its files. The scripts run in-process through their real ``main`` (Hydra's app, its callbacks, its exit codes),
which costs a fraction of a subprocess per case; ``test_refusals_from_the_installed_script`` runs a few as real
processes for the exit code and the absence of a traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from damage import damage as damage_file
from inprocess import run_main, sentences
from wandb_servers import closed_port

TINY = ["debug=smoke", "logger=csv", "callbacks.fidelity=null", "model.net.channels=8", "model.net.blocks=1",
        "model.net.head_channels=16"]


@dataclass
class Case:
    """``args`` may name ``{run}`` (a copy of a trained run), ``{sweep}`` (a sweep folder holding it), ``{work}``
    (the case's folder) and ``{file}`` (a plain file in it). ``expect``: refused | accepted | warned."""

    cls: str
    args: list[str]
    expect: str
    pattern: str = ""
    script: str = "genzoo-train"
    leaves: str = "nothing"  # refused: nothing | its run folder without checkpoints (a run stopped in training)
    holds_lock: bool = False  # another process holds {run}'s lock while the case runs
    damage: str | None = None  # what to do to {run} (or the cache, or a report tree) first: see damage()
    wandb: str | None = None  # 'dead': a W&B key in the environment, and a server where nothing answers
    id: str = field(default="")


def case(cls, expect, pattern, *args, **kw) -> Case:
    return Case(cls, list(args), expect, pattern, **kw)


CASES = [
    # ---- 1. the schema: types, ranges and names, before anything exists ----------------------------------------
    case("schema", "refused", r"^seed='abc' is not allowed: seed takes an integer ≥ 0", "seed=abc"),
    case("schema", "refused", r"^seed=-1 is out of range", "seed=-1"),
    case("schema", "refused", r"^seed=1\.5 is not allowed", "seed=1.5"),
    case("schema", "refused", r"^trainer\.max_epochs='abc' is not allowed: .*an integer ≥ -1", "trainer.max_epochs=abc"),
    case("schema", "refused", r"^trainer\.max_epochs=2\.5 is not allowed", "trainer.max_epochs=2.5"),
    case("schema", "refused", r"^model\.lr=-1 is out of range: model\.lr takes a number > 0", "model.lr=-1"),
    case("schema", "refused", r"^model\.lr=0 is out of range", "model.lr=0"),
    case("schema", "refused", r"^model\.lr='fast' is not allowed: model\.lr takes a number", "model.lr=fast"),
    case("schema", "refused", r"^data\.batch_size=0 is out of range: .*integer ≥ 1", "data.batch_size=0"),
    case("schema", "refused", r"^data\.batch_size=-3 is out of range", "data.batch_size=-3"),
    case("schema", "refused", r"^data\.num_workers=-1 is out of range: .*≥ 0", "data.num_workers=-1"),
    case("schema", "refused", r"^data\.split_seed=-1 is out of range", "data.split_seed=-1"),
    case("schema", "refused", r"^model\.net\.channels=-4 is out of range: .*integer ≥ 1", "model.net.channels=-4"),
    case("schema", "refused", r"^model\.net\.channels=0 is out of range", "model.net.channels=0"),
    case("schema", "refused", r"^model\.net\.dropout=1\.5 is out of range: .*≥ 0 and < 1", "model.net.dropout=1.5"),
    case("schema", "refused", r"^model\.net\.bottleneck='maybe' is not allowed: .*true or false",
         "model.net.bottleneck=maybe"),
    case("schema", "refused", r"^model\.weight_decay=-0\.1 is out of range", "model.weight_decay=-0.1"),
    case("schema", "refused", r"^model\.scheduler='cosine' is not allowed: .*one of 'onecycle', 'none'",
         "model.scheduler=cosine"),
    case("schema", "refused", r"^model\.decoder='gaussian' is not allowed: .*one of 'categorical', 'bernoulli', "
         r"'logistic_mixture'", "model=vae", "model.decoder=gaussian"),
    case("schema", "refused", r"^model\.components=0 is out of range: .*integer ≥ 1", "model=pixelcnn_pp",
         "model.components=0"),
    case("schema", "refused", r"^data\.stride=0 is out of range", "data=patches", "data.stride=0"),
    case("schema", "refused", r"^model\.mode='best' is not allowed: .*'min', 'max'", "model.mode=best"),
    case("schema", "refused", r"^test='maybe' is not allowed: test takes true or false", "test=maybe"),
    case("schema", "refused", r"^trainer\.precision=17 is not allowed", "trainer.precision=17"),
    case("schema", "refused", r"^trainer\.log_every_n_steps=0 is out of range", "trainer.log_every_n_steps=0"),
    case("schema", "refused", r"^trainer\.accumulate_grad_batches=0 is out of range",
         "+trainer.accumulate_grad_batches=0"),
    case("schema", "refused", r"^trainer\.max_epoch is not in the trainer config, so trainer\.max_epoch=3 has "
                              r"nothing to override \(did you mean trainer\.max_epochs\?\)", "trainer.max_epoch=3"),
    case("schema", "refused", r"^model\.net\.chanels is not in the model\.net config.*model\.net\.channels",
         "model.net.chanels=3"),
    case("schema", "refused", r"^trainer\.torch_threads=0 is out of range", "trainer.torch_threads=0"),
    case("schema", "refused", r"^sede is not a genzoo-train option \(did you mean seed\?\)", "+sede=1"),
    case("schema", "refused", r"^model\.lrr is not an option of PixelCNN \(did you mean lr\?\)", "+model.lrr=1"),
    case("schema", "refused", r"^trainer\.max_epoch is not an option of Trainer \(did you mean max_epochs\?\)",
         "+trainer.max_epoch=3"),
    case("schema", "refused", r"^paths\.cahce_dir is not a paths option \(did you mean cache_dir\?\)",
         "+paths.cahce_dir=x"),
    case("schema", "refused", r"^data\.batchsize is not an option of DigitsDataModule", "+data.batchsize=3"),
    case("schema", "refused", r"^callbacks\.fidelity\.n=0 is out of range", "callbacks.fidelity.n=0"),
    case("schema", "refused", r"^callbacks\.sample_grid\.every_n_epochs=-1 is out of range",
         "callbacks.sample_grid.every_n_epochs=-1"),
    case("schema", "refused", r"^model\.beta=-1 is out of range", "model=vae", "model.beta=-1"),
    case("schema", "refused", r"^model\.z_dim=0 is out of range", "model=vae", "model.z_dim=0"),
    case("schema", "refused", r"^model\.d_steps=0 is out of range", "model=dcgan", "model.d_steps=0"),
    case("schema", "refused", r"^model\.ema_decay=1\.0 is out of range: .*< 1", "model=dcgan", "model.ema_decay=1.0"),
    case("schema", "refused", r"^model\.label_smoothing=1 is out of range", "model=dcgan", "model.label_smoothing=1"),
    case("schema", "refused", r"^model\.generator\.width=0 is out of range", "model=dcgan", "model.generator.width=0"),
    case("schema", "refused", r"^callbacks\.checkpoint\.every_n_epochs=3 is not a multiple of callbacks\.fidelity\."
                              r"every_n_epochs=2, so the best checkpoint by val/fid", "model=dcgan",
         "callbacks.fidelity.every_n_epochs=2", "callbacks.checkpoint.every_n_epochs=3"),
    case("schema", "refused", r"^model\.loss='nope' is not allowed: model\.loss takes one of 'minimax', "
                              r"'non_saturating', 'hinge', 'wgan_gp'", "model=dcgan", "model.loss=nope"),
    case("schema", "refused", r"^model\.arch='nope' is not allowed: .*'dcgan', 'resnet'", "model=dcgan", "model.arch=nope"),
    case("schema", "refused", r"^model\.r1=-1 is out of range", "model=dcgan", "model.r1=-1"),
    case("schema", "refused", r"^model\.conditional=true needs labelled data", "model=dcgan", "data=patches",
         "model.conditional=true"),
    case("schema", "refused", r"^model\.gradient_penalty penalises each image's gradient.*discriminator\.norm=layer",
         "model=dcgan", "model.loss=wgan_gp", "model.discriminator.norm=batch"),
    case("schema", "refused", r"^model\.r1 penalises each image's gradient.*discriminator\.norm=layer", "model=dcgan",
         "model.r1=1", "model.discriminator.norm=batch"),
    case("schema", "refused", r"^model\.net\.hidden=0 is out of range", "model=row_lstm", "model.net.hidden=0"),
    case("schema", "refused", r"^model=nope is not one of genzoo's model configs: choose one of autoencoder",
         "model=nope"),
    case("schema", "refused", r"^data=imagenet is not one of genzoo's data configs", "data=imagenet"),
    case("schema", "refused", r"^experiment=digits_gan is not one of genzoo's experiment configs", "experiment=digits_gan"),
    case("schema", "refused", r"^trainer=tpu is not one of genzoo's trainer configs", "trainer=tpu"),
    case("schema", "refused", r"^n='abc' is not allowed: n takes an integer ≥ 1", "ckpt={run}", "n=abc",
         script="genzoo-sample"),
    case("schema", "refused", r"^colour is not a genzoo-sample option", "ckpt={run}", "+colour=1",
         script="genzoo-sample"),
    case("schema", "refused", r"^fidelity\.n=-5 is out of range", "ckpt={run}", "fidelity.n=-5", "logger=csv",
         script="genzoo-eval"),
    case("schema", "warned", r"model\.net\.dropout=0\.85 is legal but most likely a mistake: it drops most",
         *TINY, "model.net.dropout=0.85"),
    case("schema", "warned", r"trainer\.max_epochs=0 is legal but most likely a mistake: it trains nothing",
         *TINY, "trainer.max_epochs=0"),
    case("schema", "warned", r"trainer\.limit_train_batches=0 is legal but most likely a mistake", *TINY,
         "trainer.limit_train_batches=0"),
    case("schema", "refused", r"^The checkpoints are chosen by val/loss, which this run never logs \(it logs .*val/bpd"
                              r"\): set model\.monitor", *TINY, "model.monitor=val/loss", leaves="run"),
    case("schema", "refused", r"^model\.levels=5 does not match the data's levels 17", "model.levels=5"),
    case("schema", "refused", r"^model\.posterior='nope' is not allowed: .*one of 'diagonal', 'iaf', 'planar'",
         "model=vae", "model.posterior=nope"),
    case("schema", "refused", r"^model\.flow_steps=0 is out of range", "model=vae", "model.flow_steps=0"),
    case("schema", "refused", r"^model\.conditional=true needs labelled data, and this data has no classes: set "
         r"model\.conditional=false\.$", "model=vae", "data=patches", "model.conditional=true"),
    case("schema", "refused", r"^data\.levels=5 does not match the digits data, whose levels is 17", "data.levels=5"),
    case("schema", "refused", r"^model\.net\.chanels is not an option of PixelCNNNet: use one of channels, blocks",
         "+model.net.chanels=8"),
    case("schema", "accepted", "", *TINY),
    # ---- 2. runs that diverge without a NaN --------------------------------------------------------------------
    case("divergence", "refused", r"^The training loss stayed above 12\.3 \(3× the 4\.09 bits/dim .*10 steps in a "
                                  r"row.*diverged.*lower model\.lr \(now 10\)", "debug=smoke", "logger=csv",
         "callbacks.fidelity=null", "model.lr=10", "trainer.limit_train_batches=12", leaves="run"),
    case("divergence", "refused", r"^The (generator|discriminator) loss train/loss_[dg] stayed above 100 .*lower "
                                  r"model\.lr \(now 1e\+06\)", "model=dcgan", "model.lr=1e6", "debug=smoke",
         "logger=csv", "model.generator.width=8", "model.discriminator.width=8", "trainer.limit_train_batches=15",
         leaves="run"),
    case("divergence", "refused", r"^The training loss (became (inf|nan)|stayed above 16 ).*lower model\.lr",
         "model=autoencoder", "model.lr=1e6", "debug=smoke", "logger=csv", "trainer.limit_train_batches=12",
         leaves="run"),
    case("divergence", "warned", r"model\.lr=5 is legal but most likely a mistake: .*diverge", "model.lr=5",
         *TINY),
    # ---- 3. one process per run folder; never a new run in an old one's folder ---------------------------------
    case("folder", "refused", r"^\S+ is in use by genzoo-train \(pid \d+ on .*wait for that process to end",
         "resume={run}", "trainer.max_epochs=2", holds_lock=True),
    case("folder", "refused", r"^\S+ is in use by genzoo-train \(pid \d+", "ckpt={run}", "logger=csv",
         script="genzoo-eval", holds_lock=True),
    case("folder", "accepted", "", "resume={run}", "trainer.max_epochs=2", damage="killed_holder"),
    case("folder", "refused", r"^\S+ already holds a run \(its config\.yaml\), and a new run never writes into "
                              r"another run's folder: .*resume=", "hydra.run.dir={run}", *TINY),
    case("folder", "refused", r"^\S+ already holds the runs of a sweep \(0\)", "-m", "hydra.sweep.dir={sweep}",
         *TINY),
    # ---- 4. a resume that fails changes nothing ----------------------------------------------------------------
    case("resume", "refused", r"^The weights in \S+ do not fit the model of PixelCNN's config \(.*another shape",
         "resume={run}", "model.net.channels=16", "trainer.max_epochs=2"),
    case("resume", "refused", r"^The weights in \S+ do not fit .*1 of the model's tensors are missing",
         "resume={run}", "trainer.max_epochs=2", damage="drop_tensor"),
    case("resume", "refused", r"^\S+last\.ckpt is not a readable checkpoint", "resume={run}",
         "trainer.max_epochs=2", damage="truncate_ckpt"),
    case("resume", "refused", r"^resume=\S+ does not exist", "resume={work}/nowhere"),
    case("resume", "refused", r"cannot choose another config group", "resume={run}", "model=vae"),
    case("resume", "refused", r"^seed='x' is not allowed", "resume={run}", "seed=x", "trainer.max_epochs=2"),
    # ---- VQ-VAE: the second stage needs a first stage, and this one -------------------------------------------
    case("vqvae", "refused", r"^model\.vqvae_dir is not set: give the run folder of a finished `genzoo-train "
                             r"model=vqvae` run", "model=vqvae_prior"),
    case("vqvae", "refused", r"^model\.vqvae_dir=\S+ does not exist", "model=vqvae_prior",
         "model.vqvae_dir={work}/nowhere"),
    case("vqvae", "refused", r"^model\.vqvae_dir=\S+ is a run of genzoo\.models\.PixelCNN, not of a VQ-VAE",
         "model=vqvae_prior", "model.vqvae_dir={run}"),
    case("vqvae", "refused", r"^model\.prior\._target_=genzoo\.models\.VAE is not an autoregressive model",
         "model=vqvae_prior", "model.vqvae_dir={work}/nowhere", "model.prior._target_=genzoo.models.VAE"),
    case("vqvae", "refused", r"^model\.net\.downsamplings=4 does not halve a 8×8 image exactly", "model=vqvae",
         "model.net.downsamplings=4"),
    # ---- 5. W&B never takes a run down --------------------------------------------------------------------------
    case("wandb", "warned", r"does not answer .*so this run logs to W&B offline: upload it later with `wandb sync",
         *TINY, "logger=wandb", wandb="dead"),
    case("wandb", "refused", r"^logger\.wandb\.mode=online .*does not answer", *TINY, "logger=wandb",
         "logger.wandb.mode=online", wandb="dead"),
    case("wandb", "refused", r"^logger\.wandb\.mode=online .*no credentials", *TINY, "logger=wandb",
         "logger.wandb.mode=online"),
    case("wandb", "refused", r"logger\.wandb\.mode='sometimes' is unknown", *TINY, "logger=wandb",
         "logger.wandb.mode=sometimes"),
    # ---- 6. damaged caches heal --------------------------------------------------------------------------------
    *[case("cache", "warned", r"The cached domain classifier \S+ is damaged .*: training it again", *TINY[:2],
           *TINY[3:], damage=f"classifier:{kind}") for kind in ("truncated", "zero bytes", "random bytes")],
    case("cache", "warned", r"The cached reference statistics \S+ are damaged .*: computing them again", *TINY[:2],
         *TINY[3:], damage="statistics:truncated"),
    # ---- 8. genzoo-report on damaged run folders ---------------------------------------------------------------
    case("report", "warned", r"left out \S+: metrics\.jsonl line \d+ is cut off", "{reports}", script="genzoo-report",
         damage="report:torn"),
    case("report", "warned", r"left out \S+: config\.yaml is empty", "{reports}", script="genzoo-report",
         damage="report:empty_config"),
    case("report", "warned", r"left out \S+: metrics\.json is not valid JSON", "{reports}", script="genzoo-report",
         damage="report:bad_json"),
    # ---- reading a trained run: genzoo-eval and genzoo-sample -----------------------------------------------------
    case("trained run", "refused", r"^genzoo-eval needs ckpt=, the run to read: .*ckpt=outputs/runs/<run>", "logger=csv",
         script="genzoo-eval"),
    case("trained run", "refused", r"^genzoo-sample needs ckpt=", "n=4", script="genzoo-sample"),
    case("trained run", "refused", r"^y=3 asks for one class, but this model was trained without "
                                   r"model\.conditional=true", "ckpt={run}", "y=3", script="genzoo-sample"),
    case("trained run", "refused", r"weights-inception-2015-12-05-6726825d\.pth", "ckpt={run}", "logger=csv",
         "fidelity.extractor=inception", "fidelity.download=false", script="genzoo-eval"),
    case("trained run", "refused", r"is not a readable checkpoint", "ckpt={run}", "logger=csv", script="genzoo-eval",
         damage="corrupt_checkpoints"),
    case("trained run", "refused", r"genzoo\.models\.NoSuchModel", "ckpt={run}", "logger=csv", script="genzoo-eval",
         damage="unknown_model"),
    case("trained run", "refused", r"^batch_size=0 is out of range: batch_size takes an integer ≥ 1", "ckpt={run}",
         "batch_size=0", script="genzoo-sample"),
    *[case("trained run", "refused", rf"^genzoo-{script} takes the model and data from the run's config\.yaml, so "
                                     rf"'{re.escape(override)}' cannot change them .*not supported", "ckpt={run}",
           override, "logger=csv" if script == "eval" else "n=4", script=f"genzoo-{script}")
      for script, override in [("eval", "+data=mnist"), ("eval", "+model=vae"), ("eval", "+data.batch_size=8"),
                               ("sample", "+model=vae")]],
    # ---- 7. the environment: folders, permissions, paths Hydra cannot read -------------------------------------
    case("environment", "refused", r"^\S+ cannot be made because \S+afile is a file, not a folder: point "
                                   r"paths\.output_dir", "paths.output_dir={file}", *TINY),
    case("environment", "refused", r"cannot be made because \S+afile is a file", "paths.output_dir={file}/sub",
         *TINY),
    case("environment", "refused", r"cannot be made because \S+afile is a file", "-m", "paths.output_dir={file}",
         *TINY),
    case("environment", "refused", r"^Hydra cannot read the override paths\.output_dir=\S+\(1\): quote its value "
                                   r"inside the argument, paths\.output_dir=\"", "paths.output_dir={work}/x(1)"),
    case("environment", "refused", r"^Hydra cannot read the override paths\.data_dir=a=b", "paths.data_dir=a=b"),
    case("environment", "refused", r"^Hydra cannot read the override paths\.cache_dir=it's", "paths.cache_dir=it's"),
    case("environment", "refused", r"^The override paths\.data_dir=/d/a,b lists several values, which only a sweep "
                                   r"runs: add -m", "paths.data_dir=/d/a,b"),
    case("environment", "accepted", "", 'paths.output_dir="{work}/out (1)"', *TINY),
    case("environment", "refused", r"^The MNIST file \S+ is missing: put the MNIST files in", "data=mnist",
         "model=vae"),
    case("environment", "refused", r"^ckpt=\S+ does not exist", "ckpt={work}/nowhere", script="genzoo-eval"),
    case("environment", "refused", r"^ckpt=\S+ does not exist", "ckpt={work}/nowhere", script="genzoo-sample"),
]
for i, c in enumerate(CASES):
    c.id = f"{c.cls}-{i:02d}"


@pytest.fixture(scope="module")
def fidelity_cache(tmp_path_factory) -> Path:
    """A cache folder holding the smoke run's domain classifier and reference statistics, which cases damage."""
    work = tmp_path_factory.mktemp("fidelity")
    result = run_main("genzoo-train", [*TINY[:2], *TINY[3:]], work)
    assert result.code == 0, result.err
    assert list((work.parent / "cache" / "classifiers").glob("*.pt")), "the smoke run cached no classifier"
    return work.parent / "cache"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny finished PixelCNN run (1 epoch of 2 batches), which cases copy before they touch it."""
    work = tmp_path_factory.mktemp("trained")
    result = run_main("genzoo-train", TINY, work)
    assert result.code == 0, result.err
    (run,) = [p.parent for p in (work / "outputs" / "runs").glob("*/config.yaml")]
    return run


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run but the lock (its holder's name) and Hydra's log (a line per attempt)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and not p.name.endswith(".log")}


def damage(kind: str, run: Path, work: Path, cache: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    what, _, how = kind.partition(":")
    if what in ("classifier", "statistics"):
        shutil.copytree(cache, work.parent / "cache")
        folder = "classifiers" if what == "classifier" else "fidelity"
        damage_file(sorted((work.parent / "cache" / folder).glob("*.pt"))[0], how)
    elif what == "report":  # a good run beside a damaged copy of it
        shutil.copytree(run, work / "reports" / "good")
        bad = work / "reports" / "bad"
        shutil.copytree(run, bad)
        if how == "torn":
            with (bad / "metrics.jsonl").open("a") as f:
                f.write('{"epoch": 1, "val/bpd": 3.')
        elif how == "empty_config":
            (bad / "config.yaml").write_text("")
        else:
            (bad / "metrics.json").write_text('{"test/bpd": ')
    elif kind == "corrupt_checkpoints":
        for path in (run / "checkpoints").glob("*.ckpt"):
            path.write_bytes(b"not a checkpoint")
    elif kind == "unknown_model":
        config = run / "config.yaml"
        config.write_text(config.read_text().replace("genzoo.models.PixelCNN", "genzoo.models.NoSuchModel"))
    elif kind == "drop_tensor":
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state["state_dict"].pop(next(iter(state["state_dict"])))
        torch.save(state, ckpt)
    elif kind == "truncate_ckpt":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "killed_holder":  # a holder killed with SIGKILL leaves its lock file, and no lock
        holder = hold_lock(run)
        holder.kill()
        holder.wait()


def hold_lock(run: Path) -> subprocess.Popen:
    code = ("import sys, time; from pathlib import Path; from genzoo.run.guard import hold_run_folder\n"
            "with hold_run_folder(Path(sys.argv[1]), 'genzoo-train'):\n    print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, trained, request, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "afile").write_text("not a folder\n")
    run = work / "outputs" / "runs" / trained.name
    shutil.copytree(trained, run)
    sweep = work / "sweep"
    shutil.copytree(trained, sweep / "0")
    if c.damage:
        cache = request.getfixturevalue("fidelity_cache") if c.damage.startswith(("classifier", "stat")) else None
        damage(c.damage, run, work, cache)
    before = {p: snapshot(p) for p in (run, sweep)}
    fill = {"run": str(run), "sweep": str(sweep), "work": str(work), "file": str(work / "afile"),
            "reports": str(work / "reports")}
    holder = hold_lock(run) if c.holds_lock else None
    monkeypatch.setenv("WANDB_DIR", str(work / "wandb-home"))  # W&B's own folders, never the user's
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(work / "wandb-home"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(work / "wandb-home"))
    if c.wandb is not None or "logger.wandb.mode=online" in c.args:
        monkeypatch.delenv("WANDB_MODE")  # the suite's offline default would decide before the server is asked
    capsys.readouterr()
    with closed_port() as url:
        if c.wandb == "dead":
            monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")
            monkeypatch.setenv("WANDB_BASE_URL", url)
        try:
            result = run_main(c.script, [a.format(**fill) for a in c.args], work, capsys)
        finally:
            if holder is not None:
                holder.kill()
    output = result.out + result.err
    assert "Traceback" not in output, output[-3000:]
    new_runs = sorted(p for p in work.glob("outputs/*/*") if p != run)  # runs, sweeps, evals, samples
    if c.expect == "refused":
        assert result.code != 0, output[-3000:]
        lines = sentences(result.err)
        assert len(lines) == 1 and lines[0].endswith("."), lines
        assert re.search(c.pattern, lines[0]), lines[0]
        if c.leaves == "nothing":
            assert new_runs == [], f"a refused command left {new_runs}"
            assert not list(work.glob("outputs/**/wandb")), "a refused command started a W&B run"
        assert not [p for p in work.rglob("*.ckpt") if not p.is_relative_to(run) and not p.is_relative_to(sweep)]
        assert {p: snapshot(p) for p in (run, sweep)} == before, "a refused command changed an existing run"
    else:
        assert result.code == 0, output[-3000:]
        if c.expect == "warned":
            assert re.search(c.pattern, output), output[-3000:]
        if "resume=" not in " ".join(c.args) and c.script == "genzoo-train":
            assert new_runs or list(work.glob("out*/runs/*/config.yaml")), "an accepted run left no folder"


def test_the_catalogue_covers_every_class_with_enough_cases():
    counts = {cls: sum(c.cls == cls for c in CASES) for cls in dict.fromkeys(c.cls for c in CASES)}
    assert sum(counts.values()) >= 60 and min(counts.values()) >= 3, counts


@pytest.mark.parametrize("args, pattern", [(["seed=abc"], r"seed='abc' is not allowed"),
                                           (["paths.output_dir=/tmp/x(1)"], r"Hydra cannot read the override")])
def test_refusals_from_the_installed_script_exit_non_zero_without_a_traceback(cli, tmp_path, args, pattern):
    run = cli.train(*args, workdir=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.output, run.tail()
    assert re.search(pattern, run.stderr), run.tail()
    assert not list(run.output_dir.glob("runs/*")), run.tail()


def test_one_wild_batch_is_no_divergence_but_ten_in_a_row_are():
    from genzoo.errors import GenzooError
    from genzoo.models import PixelCNN

    model = PixelCNN(shape=(1, 4, 4), levels=17, net={"channels": 4, "blocks": 1, "head_channels": 8})
    limit, _ = model.loss_limit("train/loss")
    assert limit == pytest.approx(3 * torch.log2(torch.tensor(17.0)).item())
    for value in [limit * 10] * 9 + [limit * 0.5] + [limit * 10] * 9 + [limit] + [limit * 1.01] * 9:
        model.check_loss(torch.tensor(value), "train/loss", "training loss", "at step 0")  # a good step: count anew
    with pytest.raises(GenzooError, match=r"stayed above .* for 10 steps in a row"):
        model.check_loss(torch.tensor(limit * 1.01), "train/loss", "training loss", "at step 0")
    with pytest.raises(GenzooError, match=r"^The training loss became inf at step 0: lower model\.lr"):
        model.check_loss(torch.tensor(float("inf")), "train/loss", "training loss", "at step 0")


SHIPPED = [[f"experiment={p.stem}"] for p in sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))] + [
    [f"trainer={t}"] for t in ("cpu", "gpu", "ddp", "ddp_cpu")] + [[f"logger={name}"] for name in (
        "csv", "tensorboard", "none")] + [["debug=fdr"], ["debug=smoke"], ["hparams_search=pixelcnn_optuna"],
                                         ["hparams_search=vae_optuna"], ["callbacks=minimal"],
                                         ["data=folder", "data.root=/x"], ["model=vae", "model.net.arch=mlp"]]


def test_every_shipped_config_passes_the_schema():
    """A schema that refuses what genzoo ships would stop its own experiments: compose each and check it."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from genzoo.errors import GenzooError
    from genzoo.schema import check_config

    refused = {}
    with hydra.initialize_config_module("genzoo.conf", version_base="1.3"):
        for script, overrides in [("train", o) for o in SHIPPED] + [("eval", ["ckpt=x"]), ("sample", ["ckpt=x"])]:
            cfg = hydra.compose(script, overrides=overrides, return_hydra_config=True)
            with read_write(cfg):
                cfg.hydra.runtime.output_dir = "/tmp/run"
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            try:
                check_config(cfg, f"genzoo-{script}")
            except GenzooError as e:
                refused[f"{script} {' '.join(overrides)}"] = str(e)
    assert not refused, refused
