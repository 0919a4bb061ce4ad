"""``flip run``: convert -> train -> evaluate as the ``convert-and-train`` Prefect flow, on embedded defaults.

With no arguments: procedural COCO-format scenes generated under OUT (seeded), a local Ray started in-process,
Prefect's ephemeral API (no server needed; set PREFECT_API_URL to report to a server), CPU, FLIP-tiny, a short
training run and a quick evaluation. Real data: ``--coco-images/--coco-annotations``, ``--lvis-images/
--lvis-annotations``, or ``--<format>-root`` for the other registered formats (several may be combined).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from datasets_spec import SPECS

logger = logging.getLogger(__name__)

FILE_FORMATS = ("coco", "lvis")  # formats configured by --images/--annotations; the rest take --root
DEFAULT_STEPS = 20
DEFAULT_EVAL_INSTANCES = 24
EXTRA_LOGGERS = "flip_core,datasets_spec,flows"

EPILOG = """examples:
  flip run                                       # procedural data, CPU, FLIP-tiny, a few minutes
  flip run --coco-images ../shared/data/coco/val2017 \\
           --coco-annotations ../shared/data/coco/annotations/instances_val2017.json --steps 100
  flip run --ray-address 10.0.0.10:6379 --use-gpu --model small --steps 20000 --out /nfs/runs/small
  ray job submit --address http://127.0.0.1:8265 -- flip run --out /shared/runs/a

outputs: OUT/shards/<source>/ (HDF5 shards + manifest.parquet + rejects.parquet), OUT/train/checkpoints/
(latest.ckpt, best.ckpt), OUT/eval/report/ (summary CSV/Markdown + plots). Rerunning resumes the conversion and
reuses finished evaluation tasks; add --resume to continue training from OUT/train's latest checkpoint."""


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data sources (default: generated procedural scenes)")
    for name in sorted(SPECS):
        if name == "procedural":
            continue
        if name in FILE_FORMATS:
            group.add_argument(f"--{name}-images", metavar="DIR", help=f"{name} image directory")
            group.add_argument(f"--{name}-annotations", metavar="FILE", help=f"{name} annotation JSON")
        else:
            flag = name.replace("_", "-")
            group.add_argument(f"--{flag}-root", metavar="DIR", help=f"{name} dataset root (see flip convert {name})")
    group.add_argument("--source", action="append", default=[], metavar="'FORMAT [OPTIONS]'",
                       help="any format with its `flip convert FORMAT` options, e.g. \"grabcut --root DIR\" "
                            "(repeatable)")
    group.add_argument("--procedural-images", type=int, default=12, metavar="N",
                       help="images in the generated default dataset (default %(default)s)")
    group.add_argument("--eval-on", nargs="+", metavar="SOURCE",
                       help="sources to evaluate on (default: every source); the others are used for training only")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``flip run``."""
    parser = subparsers.add_parser(
        "run", help="run convert -> train -> evaluate as one Prefect flow (embedded defaults)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="flip-run", help="output directory (default: ./%(default)s)")
    _source_arguments(parser)
    group = parser.add_argument_group("training")
    group.add_argument("--model", default="tiny", help="FLIP size: tiny, small, middle, large (default %(default)s)")
    group.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps (default %(default)s)")
    group.add_argument("--train-workers", type=int, default=1, help="Ray Train workers (default %(default)s)")
    group.add_argument("--use-gpu", action="store_true", help="train and evaluate on GPUs")
    group.add_argument("--deepspeed-config", help="DeepSpeed JSON config (default: cluster/deepspeed ZeRO-0)")
    group.add_argument("--resume", action="store_true", help="continue training from OUT/train's latest checkpoint")
    group.add_argument("--seed", type=int, default=0, help="seed of data generation, training and evaluation")
    group = parser.add_argument_group("conversion and evaluation")
    group.add_argument("--shard-size", type=int, default=64, help="images per shard (default %(default)s)")
    group.add_argument("--eval-instances", type=int, default=DEFAULT_EVAL_INSTANCES,
                       help="instances evaluated per dataset, 0 = all (default %(default)s)")
    group.add_argument("--protocols", nargs="+", default=["flip"], choices=["flip", "clicks"],
                       help="evaluation protocols (default: flip)")
    group.add_argument("--skip-evaluation", action="store_true", help="stop after training")
    group = parser.add_argument_group("where it runs")
    group.add_argument("--ray-address", help="existing Ray cluster (HOST:6379, ray://HOST:10001 or auto); default: "
                                             "RAY_ADDRESS when set (ray job submit), else a local Ray in-process")
    group.add_argument("--num-cpus", type=int, help="CPUs of the local in-process Ray (default: all)")
    group.add_argument("--num-workers", type=int, help="parallel Ray conversion/evaluation tasks (default: CPUs)")
    group.add_argument("--require-prefect-server", action="store_true",
                       help="fail when PREFECT_API_URL does not answer instead of falling back to the ephemeral API")
    parser.set_defaults(func=run_main)
    return parser


def sources_from_args(args: argparse.Namespace):
    """The ``DataSource`` list the options describe (procedural under OUT when none). Raises pydantic errors."""
    from flows.params import DataSource

    sources = []
    for name in sorted(SPECS):
        if name in FILE_FORMATS:
            images, annotations = getattr(args, f"{name}_images", None), getattr(args, f"{name}_annotations", None)
            if images or annotations:
                if not (images and annotations):
                    raise ValueError(f"--{name}-images and --{name}-annotations go together")
                sources.append(DataSource(format=name, images=images, annotations=annotations))
        elif name != "procedural" and getattr(args, f"{name}_root", None):
            sources.append(DataSource(format=name, root=getattr(args, f"{name}_root")))
    for text in args.source:
        tokens = shlex.split(text)
        if not tokens:
            raise ValueError("--source needs a format, e.g. --source 'grabcut --root DIR'")
        sources.append(DataSource.from_argv(tokens[0], tokens[1:]))
    if not sources:
        sources.append(DataSource(format="procedural", root=str(Path(args.out).resolve() / "procedural-data"),
                                  options={"num-images": args.procedural_images, "seed": args.seed}))
    if args.eval_on:
        unknown = set(args.eval_on) - {s.label for s in sources}
        if unknown:
            raise ValueError(f"--eval-on names unknown source(s) {sorted(unknown)}; sources: "
                             f"{[s.label for s in sources]}")
        sources = [s.model_copy(update={"use": "both" if s.label in args.eval_on else "train"}) for s in sources]
    return sources


def pipeline_parameters(args: argparse.Namespace) -> dict:
    """The ``convert-and-train`` flow parameters for the parsed ``flip run`` options."""
    from flows.params import ConvertParams, EvalParams, TrainParams

    overrides = {"checkpoint_every": args.steps, "log_every": max(1, args.steps // 10)}
    return {
        "sources": sources_from_args(args),
        "out_dir": str(Path(args.out).resolve()),
        "conversion": ConvertParams(shard_size=args.shard_size, num_workers=args.num_workers),
        "training": TrainParams(model=args.model, steps=args.steps, num_workers=args.train_workers,
                                use_gpu=args.use_gpu, seed=args.seed, deepspeed_config=args.deepspeed_config,
                                resume=args.resume, overrides=overrides),
        "evaluation": EvalParams(protocols=args.protocols, num_workers=args.num_workers, seed=args.seed,
                                 max_instances=args.eval_instances or None),
        "ray_address": args.ray_address,
        "skip_evaluation": args.skip_evaluation,
    }


def _print_outputs(outputs, wall_s: float) -> None:
    print(f"\nFLIP pipeline finished in {wall_s:.1f} s")
    for name, path in outputs.shards.items():
        print(f"  shards ({name}): {path}  (manifest.parquet, rejects.parquet, index.json)")
    print(f"  checkpoints:   {Path(outputs.checkpoint).parent}  (latest: {outputs.checkpoint})")
    if outputs.report_dir:
        print(f"  report:        {outputs.report_dir}")


def run_main(args: argparse.Namespace) -> int:
    """Entry point of ``flip run``; returns the exit code (0 ok, 2 bad input/unreachable service, 1 failure)."""
    from flip_core.env import apply_local_defaults

    apply_local_defaults(use_gpu=args.use_gpu)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", EXTRA_LOGGERS)
    # The ephemeral server migrates a fresh SQLite DB first; Prefect's 20 s default is too short on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Prefect API request otherwise
    from pydantic import ValidationError

    from flows.runtime import PrefectUnavailableError, RayUnavailableError, check_ray_address, prefect_api

    start = time.perf_counter()
    try:
        params = pipeline_parameters(args)
        if args.ray_address:
            check_ray_address(args.ray_address)  # fail before Prefect starts anything
        with prefect_api(allow_ephemeral=not args.require_prefect_server) as api:
            logger.info("Prefect API: %s", api)
            from flows.convert_and_train import convert_and_train

            outputs = convert_and_train(**params)
    except ValidationError as exc:
        print(f"flip run: error: {_validation_message(exc)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RayUnavailableError, PrefectUnavailableError) as exc:
        print(f"flip run: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the flow already logged the traceback; end with one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"flip run: failed after {time.perf_counter() - start:.0f} s: {type(exc).__name__}: {first}",
              file=sys.stderr)
        return 1
    _print_outputs(outputs, time.perf_counter() - start)
    return 0


def _validation_message(exc) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.cli ARGS`` / ``python flows/convert_and_train.py ARGS``: same as ``flip run ARGS``."""
    from flip_core.logging_utils import init_logging

    parser = argparse.ArgumentParser(prog="flip")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *(sys.argv[1:] if argv is None else argv)])
    init_logging(verbose=False)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
