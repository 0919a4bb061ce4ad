"""Evaluation throughput on CPU: FLIP-tiny instances/s per worker in each mode, and the 2-worker fan-out speed-up.

Usage::

    .venv/bin/python benchmarks/bench_eval.py [--instances 16] [--repeats 3] [--shards 4] [--size 480 640]

Data: the real COCO val2017 sample in ``../shared/data/coco`` (19 images, real object sizes), converted with
``convert_dataset`` into ``--shards`` shards; with ``--synthetic`` (or when the sample is absent) a synthetic dataset of
640x480 images with 2 large ellipses each (their 5-sigma boxes cover most of the image, so box mode gains little).

Part 1 (per worker): one process, ``torch.set_num_threads(1)``, a randomly initialised FLIP-tiny (seeded), the FLIP
protocol (ground-truth Gaussian prompt, 512 tokens) on ``--instances`` instances (a seeded subset), per mode; the
prompt-ellipse baseline is timed beside it as the reference point. Reported: median over ``--repeats`` runs of
instances/s.

Part 2 (fan-out): ``plan_tasks`` + ``execute_tasks`` (one Ray task per shard, FLIP protocol, box mode,
``--fanout-instances`` instances spread over the shards) with 1 and with 2 workers on one local Ray instance started
once (start-up excluded, one untimed warm-up round so both worker processes have imported torch and the model);
fresh output directory per run. Reported: median wall time of each and the ratio (speed-up
of 2 workers over 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flip_core.env import apply_local_defaults  # noqa: E402


def per_worker(data: Path, n: int, repeats: int) -> dict[str, float]:
    from flip_core.eval.predictors import EllipsePredictor, FlipPredictor
    from flip_core.eval.protocols import flip_protocol_instance
    from flip_core.manifest import open_dataset
    from flip_core.model import build_flip_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_flip_model("tiny").eval()
    ds = open_dataset(data)
    table = ds.manifest
    pick = np.sort(np.random.default_rng(0).choice(table.num_rows, size=min(n, table.num_rows), replace=False))
    shard_of = {p.name: k for k, p in enumerate(ds.shards)}
    items = []
    for r in pick:
        reader = ds.reader(shard_of[table.column("shard")[int(r)].as_py()])
        j = table.column("instance_row")[int(r)].as_py()
        i = reader.image_of(j)
        items.append((reader.image(i), reader.mask(j), reader.ignore_mask(j), reader.moments(j)))
    predictors = {m: FlipPredictor(model=model, mode=m) for m in ("full", "box", "hierarchical")}
    predictors["ellipse baseline"] = EllipsePredictor(radius=2.0)
    out = {}
    for name, pred in predictors.items():
        rates = []
        for r in range(repeats):
            rng = np.random.default_rng(r)
            t0 = time.perf_counter()
            for image, gt, ignore, moments in items:
                flip_protocol_instance(pred, image, gt, ignore, moments, rng)
            rates.append(len(items) / (time.perf_counter() - t0))
        out[name] = statistics.median(rates)
        print(f"  {name:18s} {out[name]:8.2f} instances/s  (runs: {', '.join(f'{x:.2f}' for x in rates)})")
    return out


def fanout(data: Path, ckpt: Path, repeats: int, instances: int) -> dict[int, float]:
    import ray

    from flip_core.eval.config import EvalConfig
    from flip_core.eval.fanout import checkpoint_tag, execute_tasks, find_datasets, plan_tasks

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    walls: dict[int, list[float]] = {1: [], 2: []}
    try:
        tag, sha = checkpoint_tag(str(ckpt))
        for r in range(-1, repeats):  # round -1 is an untimed warm-up (imports torch/model in both Ray workers)
            for workers in (1, 2):
                with tempfile.TemporaryDirectory() as out:
                    cfg = EvalConfig(checkpoints=(str(ckpt),), data=(str(data),), out_dir=out, protocols=("flip",),
                                     modes=("box",), baseline=False, num_workers=workers, max_instances=instances)
                    tasks, _ = plan_tasks(cfg, find_datasets(cfg), [(tag, str(ckpt), sha)], {})
                    t0 = time.perf_counter()
                    outcomes = execute_tasks(tasks, cfg)
                    wall = time.perf_counter() - t0
                    per_task = ", ".join(f"{o.shard}:{o.instances}@{o.wall_s:.1f}s" for o in outcomes)
                    if r < 0:
                        continue
                    walls[workers].append(wall)
                    print(f"  run {r} workers={workers}: {wall:.2f} s  (tasks: {per_task})")
    finally:
        ray.shutdown()
    return {w: statistics.median(v) for w, v in walls.items()}


def _dataset(tmp: Path, args) -> Path:
    coco = REPO.parent / "shared" / "data" / "coco"
    if args.synthetic or not coco.exists():
        from tests.eval_support import build_dataset

        return build_dataset(tmp, "synthetic", shards=args.shards, images_per_shard=4, objects=2, size=(480, 640),
                             ignore_band=True)
    import ray

    from datasets_spec.coco import CocoSpec
    from flip_core.convert.run import convert_dataset

    spec = CocoSpec(images=coco / "val2017", annotations=coco / "annotations" / "instances_val2017.json", name="coco")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        import json

        n_images = len(json.loads(spec.annotations.read_text())["images"])
        convert_dataset(spec, tmp / "coco", shard_size=-(-n_images // args.shards), num_workers=2, progress=False)
    finally:
        ray.shutdown()
    return tmp / "coco"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--fanout-instances", type=int, default=16)
    p.add_argument("--fanout-only", action="store_true", help="skip part 1")
    p.add_argument("--synthetic", action="store_true", help="synthetic 640x480 data instead of the COCO sample")
    args = p.parse_args()
    apply_local_defaults()
    from flip_core.model import build_flip_model, save_flip_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = many = _dataset(tmp, args)
        torch.manual_seed(0)
        ckpt = tmp / "flip-tiny-random.ckpt"
        save_flip_checkpoint(build_flip_model("tiny"), ckpt)
        print(f"CPU cores visible: {os.cpu_count()}; torch {torch.__version__}; data {one}")
        print("Part 1: instances/s per worker (FLIP protocol, 1 torch thread, median of runs)")
        rates = {} if args.fanout_only else per_worker(one, args.instances, args.repeats)
        print(f"Part 2: fan-out over {args.shards} shards, box mode (median wall of {args.repeats} runs)")
        walls = fanout(many, ckpt, args.repeats, args.fanout_instances)
        print(f"  1 worker {walls[1]:.2f} s, 2 workers {walls[2]:.2f} s, speed-up {walls[1] / walls[2]:.2f}x")
        print("| mode | instances/s per worker |\n|---|---|")
        for k, v in rates.items():
            print(f"| {k} | {v:.2f} |")
        print(f"| fan-out 1 worker (s) | {walls[1]:.2f} |\n| fan-out 2 workers (s) | {walls[2]:.2f} |")
        print(f"| speed-up 2 vs 1 | {walls[1] / walls[2]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
