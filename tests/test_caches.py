"""The decode cache heals: a damaged array or ``source.json`` is found when loaded, one warning line names it, and
the rebuilt entry equals a clean build and is whole on disk; processes healing one entry at once do not break
each other; a cache folder that cannot be written is named with the fix. Damage: cut short, emptied, overwritten
with random bytes, missing, or a well-formed array of the wrong shape or dtype. The fidelity caches (classifier,
reference statistics, Inception weights): ``test_caches_fidelity.py``."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from damage import BYTES, damage, the_one_warning

from genzoo.data import MNISTDataModule
from genzoo.data import cache as data_cache
from genzoo.data import fake_files as fake
from genzoo.errors import GenzooError

# ---- decoded data arrays ------------------------------------------------------------------------------------------
MNIST = dict(shape=[1, 28, 28], levels=256, num_classes=10, val_size=3, verify_checksums=False)


def mnist_arrays(tmp_path: Path, cache: str = "cache") -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in MNISTDataModule(**MNIST, data_dir=str(tmp_path / "data"),
                                                       cache_dir=str(tmp_path / cache)).arrays().items()}


@pytest.fixture
def mnist_entry(tmp_path):
    """(clean arrays, the cache entry's folder) of tiny MNIST files decoded once."""
    fake.write_mnist(tmp_path / "data")
    clean = mnist_arrays(tmp_path, "clean")
    mnist_arrays(tmp_path)
    (entry,) = (tmp_path / "cache/data").iterdir()
    return clean, entry


def assert_whole_and_alone(entry: Path, clean: dict) -> None:
    """The entry on disk loads without complaint and equals ``clean``; no temporary or damaged folder is left."""
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]
    arrays = data_cache.load_entry(entry)
    assert arrays.keys() == clean.keys() and all(np.array_equal(arrays[k], clean[k]) for k in clean)


def rewrite(path: Path, kind: str) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "wrong shape":  # a whole .npy of another shape
        np.save(path, np.zeros((6, 1, 28, 27), dtype=np.uint8))
    elif kind == "wrong dtype":
        np.save(path, np.load(path).astype(np.int16))
    else:
        damage(path, kind)


@pytest.mark.parametrize("name,kind", [("test_images.npy", k) for k in (*BYTES, "missing", "wrong shape",
                                                                         "wrong dtype")]
                         + [("val_labels.npy", "truncated"), ("source.json", "truncated"),
                            ("source.json", "random bytes"), ("source.json", "missing")])
def test_a_damaged_data_array_is_rebuilt_after_one_warning_naming_it(mnist_entry, tmp_path, caplog, name, kind):
    clean, entry = mnist_entry
    rewrite(entry / name, kind)
    arrays = mnist_arrays(tmp_path)
    message = the_one_warning(caplog, entry / name)
    assert "rebuilding" in message
    assert all(np.array_equal(arrays[k], clean[k]) for k in clean) and arrays.keys() == clean.keys()
    assert_whole_and_alone(entry, clean)


def test_an_entry_without_a_record_of_its_arrays_is_checked_by_loading_and_gets_the_record(mnist_entry, tmp_path,
                                                                                           caplog):
    clean, entry = mnist_entry
    source = json.loads((entry / "source.json").read_text())
    recorded = source.pop("arrays")
    (entry / "source.json").write_text(json.dumps(source))  # as entries were written before the record
    assert all(np.array_equal(v, clean[k]) for k, v in mnist_arrays(tmp_path).items())
    assert not caplog.records
    assert json.loads((entry / "source.json").read_text())["arrays"] == recorded

    (entry / "source.json").write_text(json.dumps(source))
    np.save(entry / "val_images.npy", np.zeros((2, 1, 28, 28), dtype=np.uint8))  # fewer rows than its labels
    mnist_arrays(tmp_path)
    the_one_warning(caplog, entry / "val_images.npy")
    assert_whole_and_alone(entry, clean)


def toy_decode(out: data_cache.CacheWriter) -> None:
    time.sleep(0.3)  # long enough for every process to be decoding at once
    out.put("train_images", np.arange(48, dtype=np.uint8).reshape(3, 1, 4, 4))
    out.put("train_labels", np.arange(3, dtype=np.int64))


def heal(cache_dir: Path, start, results) -> None:
    start.wait()
    arrays = data_cache.cached_arrays(cache_dir, "toy", {}, [], toy_decode)
    results.put(int(arrays["train_images"].sum()) + int(arrays["train_labels"].sum()))


def test_processes_healing_one_entry_at_once_all_get_whole_arrays_and_leave_one_entry(tmp_path):
    data_cache.cached_arrays(tmp_path, "toy", {}, [], toy_decode)
    (entry,) = (tmp_path / "data").iterdir()
    damage(entry / "train_images.npy", "truncated")
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=heal, args=(tmp_path, start, results)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in workers) == [sum(range(48)) + 3] * 3
    assert_whole_and_alone(entry, {"train_images": np.arange(48, dtype=np.uint8).reshape(3, 1, 4, 4),
                                   "train_labels": np.arange(3, dtype=np.int64)})


def test_a_cache_folder_that_cannot_be_written_is_named_with_the_fix(tmp_path, monkeypatch):
    fake.write_mnist(tmp_path / "data")
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "cache")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(GenzooError) as e:
        mnist_arrays(tmp_path)
    message = str(e.value)
    assert f"paths.cache_dir={tmp_path / 'cache'} cannot be written" in message and "writable" in message
    assert "\n" not in message and message.endswith(".")
