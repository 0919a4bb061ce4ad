"""Loader throughput: milliseconds per image (JPEG decode + 4 prompts of augmentation, patch and mask-target
sampling + collate) on real COCO shards, single process / single core, Cython kernels vs the NumPy reference
samplers (``cython_ops.reference``) in the same run.

Rows:
* ``cython, 2048 pts``: the fixed per-group split (what the reference loader does per prompt: 2048 points);
* ``cython, dynamic pool``: what training does with dynamic sampling on (7 x 2024 pool points per prompt, see
  ``flip_core.data.dataset``);
* ``numpy reference, 2048 pts``: the same work with the NumPy reference samplers (baseline).

Wall and CPU time (``time.process_time``) are both reported; on a shared, loaded machine the CPU time is the better
estimate of the per-core cost.

Allocator: the script re-runs itself under the glibc settings the training workers use
(``flip_core.env.TRAINING_MALLOC_TUNABLES``; Ray Train workers and their loader processes get them through
``flip_core.env.training_worker_env``) unless ``--malloc default`` or ``GLIBC_TUNABLES`` is set.

Usage: ``python benchmarks/bench_loader.py [--data CONVERTED_DIR] [--runs 5] [--passes 2]``. Without ``--data``
the ../shared/data/coco val2017 sample is converted into a temporary directory first. The reference loader
measured 12.1 ms per image on this kind of machine (../shared/reference/benchmarks.md); target <= 4 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flip_core.data.collate import collate_images  # noqa: E402
from flip_core.data.dataset import FlipTrainDataset  # noqa: E402
from flip_core.data.sampler import MixturePlan, RankStream  # noqa: E402
from flip_core.env import apply_local_defaults, reexec_with_training_malloc  # noqa: E402
from flip_core.train.config import DataConfig  # noqa: E402
from flip_core.train.data_setup import open_training_data  # noqa: E402

PATCH_SIZES = (1, 2, 4, 8, 16)


def convert_sample(out: Path) -> Path:
    from datasets_spec.coco import CocoSpec
    from flip_core.convert import convert_dataset

    coco = REPO.parent / "shared" / "data" / "coco"
    convert_dataset(CocoSpec(images=coco / "val2017", annotations=coco / "annotations" / "instances_val2017.json"),
                    out, shard_size=8, num_workers=2, progress=False)
    return out


def ms_per_image(data_dir: Path, *, backend: str, dynamic: bool, passes: int,
                 images_per_batch: int = 4) -> tuple[float, float]:
    """(wall ms, CPU ms of this process) per image."""
    data = DataConfig(manifests=(str(data_dir),), backend=backend, dynamic_sampling=dynamic, loader_workers=0,
                      images_per_batch=images_per_batch)
    indexes = open_training_data(data, verify=False)
    dataset = FlipTrainDataset(indexes, data, PATCH_SIZES, seed=0)
    n = passes * indexes[0].num_images // images_per_batch * images_per_batch
    batches = RankStream(MixturePlan(sizes=(indexes[0].num_images,), weights=(None,), seed=0), rank=0,
                         world_size=1).batches(images_per_batch)
    collate_images([dataset[k] for k in next(batches)])  # warm-up: open shards, import kernels
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n // images_per_batch):
        collate_images([dataset[k] for k in next(batches)])
    return (time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3


def decode_ms_per_image(data_dir: Path, *, passes: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per image of the decode floor alone: the JPEG plus the distinct masks of 4 prompts."""
    import numpy as np

    data = DataConfig(manifests=(str(data_dir),), loader_workers=0)
    (index,) = open_training_data(data, verify=False)
    dataset = FlipTrainDataset([index], data, PATCH_SIZES, seed=0)
    rng = np.random.default_rng(0)
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for _ in range(passes):
        for i in range(index.num_images):
            reader = dataset.reader(0, int(index.image_shard[i]))
            reader.image(int(index.image_row[i]))
            span = index.instances(i)
            chosen = rng.choice(np.arange(span.start, span.stop), 4, replace=span.stop - span.start < 4)
            for inst in set(chosen.tolist()):
                reader.mask(int(index.inst_row[inst]))
            n += 1
    return (time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="converted dataset directory")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row (median reported)")
    parser.add_argument("--passes", type=int, default=2, help="passes over the images per run")
    parser.add_argument("--malloc", choices=["training", "default"], default="training",
                        help="glibc allocator settings: 'training' (default) re-runs under "
                             "flip_core.env.TRAINING_MALLOC_TUNABLES unless GLIBC_TUNABLES is set; 'default' keeps "
                             "glibc's defaults")
    args = parser.parse_args(argv)
    if args.malloc == "training":
        reexec_with_training_malloc()
    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}", flush=True)
    apply_local_defaults()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or convert_sample(Path(tmp) / "coco")
        rows = [("cython, 2048 pts", "cython", False), ("cython, dynamic pool", "cython", True),
                ("numpy reference, 2048 pts", "numpy", False)]
        results = {}
        for label, backend, dynamic in rows:
            runs = [ms_per_image(data_dir, backend=backend, dynamic=dynamic, passes=args.passes)
                    for _ in range(args.runs)]
            walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
            results[label] = (statistics.median(walls), min(walls), max(walls), statistics.median(cpus))
        decode = [decode_ms_per_image(data_dir, passes=args.passes) for _ in range(args.runs)]
        walls, cpus = [r[0] for r in decode], [r[1] for r in decode]
        results["decode only (JPEG + distinct masks)"] = (statistics.median(walls), min(walls), max(walls),
                                                           statistics.median(cpus))
    base_wall, base_cpu = results["numpy reference, 2048 pts"][0], results["numpy reference, 2048 pts"][3]
    print("| loader (1 process, 1 thread, 4 prompts/image) | median wall ms/image | min | max | "
          "median CPU ms/image | vs NumPy reference (wall / CPU) |")
    print("|---|---|---|---|---|---|")
    for label, (med, lo, hi, cpu) in results.items():
        print(f"| {label} | {med:.2f} | {lo:.2f} | {hi:.2f} | {cpu:.2f} | {base_wall / med:.2f}x / "
              f"{base_cpu / cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
