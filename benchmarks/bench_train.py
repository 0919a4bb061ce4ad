"""FLIP-tiny training throughput on CPU through the real stack (Ray Train TorchTrainer + DeepSpeed ZeRO, gloo),
with 1 and 2 Ray workers.

Reported per configuration: median object samples (prompts) per second over the steps after the first
``--warmup`` (from ``RUN_DIR/metrics.jsonl``; global over ranks), median tokens/s, and the wall time of the whole
``train()`` call (Ray start-up and teardown included). Each worker uses 1 CPU and 1 loader process.

Usage: ``python benchmarks/bench_train.py [--data CONVERTED_DIR] [--steps 20] [--images-per-batch 2]
[--zero 0] [--workers 1 2]``. Without ``--data`` the ../shared/data/coco val2017 sample is converted first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_loader import convert_sample  # noqa: E402
from flip_core.env import apply_local_defaults  # noqa: E402
from flip_core.train import DataConfig, TrainConfig, train  # noqa: E402
from flip_core.train.config import DEEPSPEED_CONFIG_DIR  # noqa: E402
from flip_core.train.metrics import read_metrics  # noqa: E402


def run(data_dir: Path, run_dir: Path, *, workers: int, steps: int, images: int, zero: int, warmup: int) -> dict:
    config = TrainConfig(model="tiny", data=DataConfig(manifests=(str(data_dir),), images_per_batch=images),
                         run_dir=str(run_dir), steps=steps, num_workers=workers, checkpoint_every=steps,
                         log_every=max(steps // 4, 1), deepspeed_config=str(DEEPSPEED_CONFIG_DIR / f"zero{zero}.json"))
    result = train(config)
    recs = read_metrics(result.metrics_path)[warmup:]
    return {"samples_per_s": statistics.median(r["samples_per_s"] for r in recs),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
            "samples_per_step": statistics.median(r["samples"] for r in recs), "wall_s": result.wall_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="converted dataset directory")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the medians")
    parser.add_argument("--images-per-batch", type=int, default=2, help="images per worker per step (x4 prompts)")
    parser.add_argument("--zero", type=int, default=0, choices=(0, 1, 2))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    apply_local_defaults()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or convert_sample(Path(tmp) / "coco")
        rows = {w: run(data_dir, Path(tmp) / f"run-{w}", workers=w, steps=args.steps, images=args.images_per_batch,
                       zero=args.zero, warmup=args.warmup) for w in args.workers}
    base = rows[args.workers[0]]["samples_per_s"]
    print(f"| FLIP-tiny, ZeRO {args.zero}, CPU | samples/step | median samples/s | median tokens/s | "
          f"speed-up | wall s ({args.steps} steps) |")
    print("|---|---|---|---|---|---|")
    for w, r in rows.items():
        print(f"| {w} Ray worker(s) | {r['samples_per_step']:.0f} | {r['samples_per_s']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['samples_per_s'] / base:.2f}x | {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
