"""How long genzoo's FID takes against torch-fidelity's on the same images, and what the reference cache saves.

    python benchmarks/fidelity.py [--repeats 5] [--copies 4]

Offline, on the digits, with the domain classifier as extractor (the Inception weights need a download).
"Generated" images are the validation split (``--copies`` times over, so the timings are not all overhead); the
reference is the test split. Sampling is left out of every timing: it is the model's cost, not the metric's.

1. FID alone, uncached, both starting from the classifier's weights file: genzoo (build extractor, extract
   both sets in slices, statistics, FID) against ``torch_fidelity.calculate_metrics(fid=True, cache=False)``.
   Repeats are interleaved; the medians are compared. Target: genzoo / torch-fidelity ≤ 1.1.
2. A whole evaluation (FID, IS, KID, precision/recall and the real-vs-real floor) in a fresh cache folder,
   then again with everything cached. The first includes training the classifier (once per data set), so the
   ratio is also printed without it (reference statistics the only thing cached). Target: ≥ 3× faster.
   On the digits the classifier's features are cheap and KID's 100 subsets are a fixed cost of both runs, so
   the third line times the cached part alone: reference statistics computed against loaded.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch_fidelity

from genzoo.data import DigitsDataModule
from genzoo.evaluation import cache, classifier, features
from genzoo.evaluation.metrics import fid, fidelity_metrics


def classifier_weights(dm, folder: Path) -> Path:
    train, test = dm.splits["train"], dm.splits["test"]
    path = classifier.classifier_path(folder, "digits", features.tensor_hash(train.images), {})
    if not path.is_file():
        classifier.train_classifier((features.to_uint8(train.images, 17), train.labels),
                                    (features.to_uint8(test.images, 17), test.labels), 10, {}, path)
    return path


def genzoo_fid(weights: Path, fake, real) -> float:
    extractor = features.build_extractor("classifier", weights)
    stats = [cache.statistics(features.extract(extractor, x, 17, show=False)["features"]) for x in (fake, real)]
    return fid(*stats)


def torch_fidelity_fid(weights: Path, fake, real) -> float:
    out = torch_fidelity.calculate_metrics(
        input1=features.BareTensors(features.to_uint8(fake, 17)),
        input2=features.BareTensors(features.to_uint8(real, 17)),
        cuda=False, fid=True, feature_extractor=classifier.NAME, feature_extractor_weights_path=str(weights),
        batch_size=256, cache=False, verbose=False, save_cpu_ram=True)
    return out["frechet_inception_distance"]


def evaluation(dm, folder: Path, fake) -> tuple[dict, float]:
    """What the Fidelity callback does after sampling; returns (metrics, seconds spent training a classifier)."""
    start = time.perf_counter()
    weights = classifier_weights(dm, folder)
    trained_s = time.perf_counter() - start
    extractor = features.build_extractor("classifier", weights)
    real, train = dm.splits["test"].images, dm.splits["train"].images
    reference = cache.reference(extractor, folder, "digits", "test", real, 17, len(real))
    floor = cache.reference(extractor, folder, "digits", "train", train, 17, len(real))
    results = fidelity_metrics(features.extract(extractor, fake, 17, show=False), reference)
    results["fid_floor"] = fid(floor, reference)
    return results, trained_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features.register_extractors()
    dm = DigitsDataModule(shape=[1, 8, 8], levels=17, num_classes=10)
    dm.setup()
    fake, real = dm.splits["val"].images.repeat(args.copies, 1, 1, 1), dm.splits["test"].images

    with tempfile.TemporaryDirectory() as tmp:
        weights = classifier_weights(dm, Path(tmp) / "shared")
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits both
            t = time.perf_counter()
            a = genzoo_fid(weights, fake, real)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = torch_fidelity_fid(weights, fake, real)
            theirs.append(time.perf_counter() - t)
        print(f"FID of {len(fake)} vs {len(real)} digits, classifier features, {args.threads} thread(s), "
              f"median of {args.repeats}:")
        print(f"  genzoo {statistics.median(ours) * 1e3:.1f} ms, torch-fidelity {statistics.median(theirs) * 1e3:.1f}"
              f" ms, FID {a:.6f} vs {b:.6f}")
        print(f"  ratio genzoo / torch-fidelity = {statistics.median(ours) / statistics.median(theirs):.2f}"
              "  (target ≤ 1.1)")

        firsts, seconds, without_training = [], [], []
        for r in range(args.repeats):
            folder = Path(tmp) / f"fresh{r}"
            t = time.perf_counter()
            first, trained_s = evaluation(dm, folder, fake)
            firsts.append(time.perf_counter() - t)
            without_training.append(firsts[-1] - trained_s)
            t = time.perf_counter()
            second, _ = evaluation(dm, folder, fake)
            seconds.append(time.perf_counter() - t)
            assert second == first, "the cached evaluation gave other numbers"
        f, s, w = (statistics.median(v) for v in (firsts, seconds, without_training))
        extractor = features.build_extractor("classifier", weights)
        computed, loaded = [], []
        for r in range(args.repeats):
            for times in (computed, loaded):  # the first call of a fresh folder computes, the second loads
                t = time.perf_counter()
                cache.reference(extractor, Path(tmp) / f"ref{r}", "digits", "train", dm.splits["train"].images, 17,
                                len(dm.splits["train"]))
                times.append(time.perf_counter() - t)
        print(f"Whole evaluation (FID, IS, KID, precision/recall, floor), median of {args.repeats}:")
        print(f"  first in a fresh cache {f:.2f} s (of which training the classifier {f - w:.2f} s), "
              f"second {s * 1e3:.0f} ms")
        print(f"  ratio first / second = {f / s:.1f}x  (target ≥ 3); without the classifier's training "
              f"{w / s:.1f}x")
        c, lo = statistics.median(computed), statistics.median(loaded)
        print(f"Reference statistics of the {len(dm.splits['train'])} training digits: computed {c * 1e3:.0f} ms, "
              f"loaded {lo * 1e3:.1f} ms, ratio {c / lo:.1f}x")


if __name__ == "__main__":
    main()
