"""``flip train``: train FLIP with DeepSpeed on a Ray cluster (Ray Train ``TorchTrainer``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flip_core.train.config import DEEPSPEED_CONFIG_DIR, MODEL_SIZES, DataConfig, TrainConfig

__all__ = ["add_parser", "parse_data_arg", "config_from_args"]

logger = logging.getLogger(__name__)

EPILOG = f"""\
Writes under RUN_DIR: train_config.json, metrics.jsonl (one JSON record per step: loss, sampled-point IoU,
per-group IoU and point counts, samples/s, tokens/s, lr), tensorboard/, checkpoints/step-XXXXXXX.ckpt,
latest.ckpt and best.ckpt (FLIP checkpoints for `flip evaluate` / `flip export-onnx`) and ray/step-XXXXXXX
(DeepSpeed checkpoints, used by --resume and by worker restarts).

DeepSpeed configs shipped in {DEEPSPEED_CONFIG_DIR}: zero0.json, zero1.json, zero2.json ("auto" values are
filled from the options here; fp32 on CPU, bf16 on GPUs that support it, no gradient clipping).

Examples:
  flip train --model tiny --data out/coco --out runs/tiny --steps 2000 --num-workers 2
  flip train --model tiny --data out/coco --out runs/tiny --steps 4000 --resume
  flip train --model small --data out/sa1b:3 out/coco:1 --out runs/small --use-gpu --num-workers 8 \\
      --ray-address auto --zero 2
"""


def parse_data_arg(value: str) -> tuple[str, float | None]:
    """``PATH`` or ``PATH:WEIGHT`` -> (path, weight or None). A suffix that is not a number is part of the path."""
    head, sep, tail = value.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return value, None


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a FLIP model with DeepSpeed on a Ray cluster (Ray Train)",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODEL_SIZES, help="model size")
    p.add_argument("--data", required=True, nargs="+", metavar="MANIFEST[:WEIGHT]",
                   help="converted datasets (dir, index.json or manifest.parquet); optional mixing weight after ':' "
                        "(default: proportional to size)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--steps", type=int, default=1000, help="total optimizer steps (with --resume: continue up to it)")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers = data-parallel ranks")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs reserved per worker")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (nccl; bf16 where supported)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (e.g. auto, HOST:6379); default local")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--deepspeed-config", default=None, metavar="FILE", help="DeepSpeed JSON config")
    g.add_argument("--zero", type=int, choices=(0, 1, 2), default=0, help="shipped config zero{N}.json (default 0)")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard with the local Ray")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its latest checkpoint")
    p.add_argument("--seed", type=int, default=1234, help="seed of model init, sampling and augmentation")
    p.add_argument("--images-per-batch", type=int, default=2,
                   help="images per worker per micro-step (x4 prompts; reference: 16, large 8)")
    p.add_argument("--mean-tokens", type=int, default=512, help="mean requested patches per prompt (Beta budget)")
    p.add_argument("--max-tokens", type=int, default=2048, help="most requested patches per prompt")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=6e-4, help="Ranger learning rate")
    p.add_argument("--weight-decay", type=float, default=6e-4, help="Ranger decoupled weight decay")
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes per worker (0: inline)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every K steps")
    p.add_argument("--keep-checkpoints", type=int, default=3, help="recent checkpoints kept (plus best.ckpt)")
    p.add_argument("--log-every", type=int, default=10, help="progress line every N steps")
    p.add_argument("--max-failures", type=int, default=1, help="worker-group restarts from the last checkpoint")
    p.add_argument("--no-dynamic-sampling", action="store_true", help="fixed per-group mask-point counts")
    p.add_argument("--convention", choices=("exact", "reference"), default="exact",
                   help="frame N->P/M position convention (reference: per-axis sigma scaling, spec 2.5)")
    p.add_argument("--verify", choices=("sha256", "exists"), default="sha256",
                   help="shard check before training (sha256 of every shard, or existence only for huge sets)")
    p.add_argument("--backend", choices=("cython", "numpy"), default="cython", help="sampling kernels")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the :class:`TrainConfig` of a parsed command line (raises ValueError for bad values)."""
    paths, weights = zip(*(parse_data_arg(v) for v in args.data))
    ds_config = args.deepspeed_config or str(DEEPSPEED_CONFIG_DIR / f"zero{args.zero}.json")
    data = DataConfig(manifests=tuple(str(Path(p).resolve()) for p in paths),
                      weights=weights if any(w is not None for w in weights) else (),
                      images_per_batch=args.images_per_batch, loader_workers=args.loader_workers,
                      mean_tokens=args.mean_tokens, max_tokens=args.max_tokens,
                      dynamic_sampling=not args.no_dynamic_sampling, convention=args.convention,
                      backend=args.backend, verify=args.verify)
    return TrainConfig(model=args.model, data=data, run_dir=str(Path(args.out).resolve()), steps=args.steps,
                       seed=args.seed, lr=args.lr, weight_decay=args.weight_decay,
                       gradient_accumulation_steps=args.grad_accum, num_workers=args.num_workers,
                       cpus_per_worker=args.cpus_per_worker, use_gpu=args.use_gpu, ray_address=args.ray_address,
                       deepspeed_config=str(Path(ds_config).resolve()), checkpoint_every=args.checkpoint_every,
                       keep_checkpoints=args.keep_checkpoints, log_every=args.log_every, resume=args.resume,
                       max_failures=args.max_failures, dashboard=args.dashboard)


def run(args: argparse.Namespace) -> int:
    from flip_core.env import apply_local_defaults
    from flip_core.train.launch import RunDirError, train

    apply_local_defaults(use_gpu=args.use_gpu)
    try:
        result = train(config_from_args(args))
    except (ValueError, FileNotFoundError) as exc:  # RunDirError is a ValueError
        kind = "run directory" if isinstance(exc, RunDirError) else "input"
        print(f"flip train: {kind} error: {exc}")
        return 2
    print(f"trained FLIP-{result.model} steps {result.start_step}->{result.final_step}: loss {result.final_loss:.4f}, "
          f"sampled-point IoU {100 * result.final_iou:.1f}%, {result.samples_per_s:.1f} samples/s, "
          f"{result.wall_s:.0f} s")
    print(f"metrics: {result.metrics_path}")
    print(f"checkpoints: latest {result.latest_checkpoint}, best {result.best_checkpoint}")
    return 0
