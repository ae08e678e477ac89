"""Tiny files in each data set's real on-disk format, for tests and benchmarks: they go through the real readers.

Every writer takes a folder (``data_dir`` in torchvision's layout, or a plain folder for ``folder``) and a count of
images per split, fills the images with random values from a fixed seed, and returns what it wrote, so tests can
compare the decoded arrays with the truth.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

ATTRS = [f"attr_{i}" for i in range(40)]
LANDMARKS = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x", "leftmouth_y",
             "rightmouth_x", "rightmouth_y"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_idx(path: Path, array: np.ndarray) -> None:
    """idx format: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(head + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(data_dir: Path, n_train: int = 12, n_test: int = 6, folder: str = "MNIST", seed: int = 0) -> dict:
    rng = _rng(seed)
    truth = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(data_dir / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data_dir / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        truth[prefix] = (images, labels)
    return truth


def write_cifar10(data_dir: Path, per_batch: int = 3, seed: int = 0) -> dict:
    """The "python version": pickled dicts with ``data`` (N, 3072) uint8 in CHW order and ``labels``."""
    rng = _rng(seed)
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f, protocol=2)
        truth[name] = (data.reshape(-1, 3, 32, 32), labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return truth


def write_svhn(data_dir: Path, n: dict | None = None, seed: int = 0) -> dict:
    """Format 2 ``.mat`` files: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) with the digit 0 written as 10."""
    from scipy.io import savemat

    rng = _rng(seed)
    folder = data_dir / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for part, count in (n or {"train": 10, "test": 4, "extra": 5}).items():
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        digits = rng.integers(0, 10, count)
        savemat(folder / f"{part}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": np.where(digits == 0, 10,
                                                                                                   digits)[:, None]})
        truth[part] = (images, digits)
    return truth


def write_celeba(data_dir: Path, partition: tuple[int, int, int] = (4, 2, 2), seed: int = 0) -> list[str]:
    """img_align_celeba/*.jpg (178 wide, 218 high) and the five space-separated .txt files torchvision reads."""
    rng = _rng(seed)
    folder = data_dir / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names, splits = [], []
    for split, count in enumerate(partition):
        for _ in range(count):
            name = f"{len(names) + 1:06d}.jpg"
            pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
            names.append(name)
            splits.append(split)
    n = len(names)

    def rows(values) -> str:  # "000001.jpg v1 v2 …", one line per image
        return "\n".join(f"{name} {' '.join(map(str, v))}" for name, v in zip(names, values)) + "\n"

    (folder / "list_eval_partition.txt").write_text(rows([[s] for s in splits]))
    (folder / "identity_CelebA.txt").write_text(rows([[i + 1] for i in range(n)]))
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)}\n" + rows(
        rng.choice([-1, 1], (n, 40)).tolist()))
    (folder / "list_bbox_celeba.txt").write_text(f"{n}\nimage_id x_1 y_1 width height\n" + rows(
        [[10, 20, 100, 150]] * n))
    (folder / "list_landmarks_align_celeba.txt").write_text(f"{n}\n{' '.join(LANDMARKS)}\n" + rows(
        [[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]] * n))
    return names


def write_amat(data_dir: Path, sizes: dict | None = None, seed: int = 0) -> dict:
    """Larochelle's binarized MNIST: one image per line, 784 values 0/1 separated by spaces."""
    rng = _rng(seed)
    folder = data_dir / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, count in (sizes or {"train": 8, "valid": 3, "test": 3}).items():
        bits = rng.integers(0, 2, (count, 784), dtype=np.uint8)
        (folder / f"binarized_mnist_{split}.amat").write_text("".join(" ".join(map(str, b)) + "\n" for b in bits))
        truth[split] = bits.reshape(-1, 1, 28, 28)
    return truth


def write_folder(root: Path, n: int = 10, classes: tuple[str, ...] = (), mode: str = "RGB", seed: int = 0) -> list:
    """PNGs and JPEGs of odd sizes, in ``root`` itself or in one sub-folder per class."""
    rng = _rng(seed)
    paths = []
    for i in range(n):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        shape = (h, w) if mode == "L" else (h, w, 3)
        path = folder / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
