"""``genzoo-train data=NAME debug=smoke`` with a small PixelCNN on every data set (grey and RGB), from tiny generated
files in ``paths.data_dir``; and a missing or damaged data set stopping the installed script with one sentence."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from omegaconf import OmegaConf

from genzoo.data import fake_files as fake

SMALL = ["debug=smoke", "model=pixelcnn", "model.net.channels=8", "model.net.blocks=1", "model.net.head_channels=8",
         "logger=none", "callbacks.fidelity=null", "data.batch_size=4", "data.eval_batch_size=4",
         "++data.verify_checksums=false"]
# One process per line, each a sweep over data sets, so Python and torch are imported once per line, not per run.
# ++data.val_size: every on-disk datamodule takes it (CelebA and folders hold out their own way and ignore it).
SWEEPS = {
    "grey": ["data=mnist,fashion_mnist,binarized_mnist", "++data.val_size=2"],
    "rgb": ["data=cifar10,svhn,celeba", "++data.val_size=2"],
    "folder": ["data=folder", "data.channels=1,3", "data.image_size=16", "data.val_fraction=0.1",
               "data.test_fraction=0.1"],
    "larochelle": ["data=binarized_mnist", "data.binarization=larochelle", "data.num_classes=0"],
}
EXPECTED = ["mnist", "fashion_mnist", "binarized_mnist", "cifar10", "svhn", "celeba", "folder 1", "folder 3",
            "binarized_mnist larochelle"]


def write_everything(data_dir):
    fake.write_mnist(data_dir)
    fake.write_mnist(data_dir, folder="FashionMNIST")
    fake.write_cifar10(data_dir)
    fake.write_svhn(data_dir)
    fake.write_celeba(data_dir)
    fake.write_amat(data_dir)
    fake.write_folder(data_dir / "images", n=10, mode="RGB")


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory):
    """The three sweeps and the two broken data sets, three processes at a time."""
    root = tmp_path_factory.mktemp("data_cli")
    jobs = {}
    for name, overrides in SWEEPS.items():
        write_everything(root / name / "data")
        extra = [f"data.root={root / name / 'data' / 'images'}"] if name == "folder" else []
        jobs[name] = ("-m", *SMALL, *overrides, *extra)
    fake.write_cifar10(root / "corrupt" / "data")  # random bytes: not the published md5 sums
    jobs["corrupt"] = ("debug=smoke", "logger=none", "data=cifar10", "data.verify_checksums=true")
    jobs["missing"] = ("debug=smoke", "logger=none", "data=cifar10")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(cli.train, *args, workdir=root / name, process=True)  # threads: processes
                   for name, args in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def smoke_jobs(runs):
    """Every data set's job folder and its config."""
    jobs = {}
    for name in SWEEPS:
        run = runs[name]
        assert run.returncode == 0, run.tail()
        assert "Traceback" not in run.output, run.tail()
        for config_file in run.output_dir.glob("sweeps/*/*/config.yaml"):
            config = OmegaConf.load(config_file)
            jobs[job_name(config)] = (config_file.parent, config)
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_smoke_run_trains_and_tests_a_pixelcnn(smoke_jobs, name):
    assert name in smoke_jobs, sorted(smoke_jobs)
    job, config = smoke_jobs[name]
    assert (job / "metrics.json").is_file() and list((job / "checkpoints").glob("*.ckpt"))
    assert list(config.model.shape) == list(config.data.shape) and config.model.levels == config.data.levels
    if name.startswith("binarized"):  # the run folder records which binarisation its numbers are on
        assert config.data.binarization == ("larochelle" if "larochelle" in name else "dynamic")


def job_name(config) -> str:
    target = config.data._target_.rsplit(".", 1)[1]
    if target == "FolderDataModule":
        return f"folder {config.data.channels}"
    if target == "BinarizedMNISTDataModule":
        return "binarized_mnist" + (" larochelle" if config.data.binarization == "larochelle" else "")
    return {"MNISTDataModule": "mnist", "FashionMNISTDataModule": "fashion_mnist", "CIFAR10DataModule": "cifar10",
            "SVHNDataModule": "svhn", "CelebADataModule": "celeba"}[target]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_data_stops_the_script_with_one_sentence(runs, damage):
    run = runs[damage]
    if damage == "corrupt":
        fragments = ["cifar-10-batches-py/data_batch_1", "corrupt", "data.download=true"]
    else:
        fragments = [str(run.workdir / "data" / "cifar-10-batches-py"), "data.download=true", "put the CIFAR-10 files"]
    assert run.returncode != 0, run.tail()
    assert "Traceback" not in run.output, run.tail()
    hydra_frame = ("Error executing job with overrides", "Set the environment variable HYDRA_FULL_ERROR")
    message = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith(hydra_frame)]
    assert len(message) == 1, run.tail()  # before the trainer is built: not even Lightning's banner
    assert all(fragment in message[0] for fragment in fragments), message
    assert message[0].rstrip().endswith(".") and ": " in message[0], message
    assert not list(run.output_dir.rglob("*.ckpt"))
