"""``flip convert <format> ... --out DIR``: any registered dataset format to FLIP shards, on Ray.

Formats come from ``datasets_spec.SPECS``; each spec module adds its own options (``add_cli_arguments``) and its
docstring (the expected on-disk layout) becomes the epilog of ``flip convert <format> --help``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from datasets_spec import SPECS
from datasets_spec.base import SpecError

logger = logging.getLogger(__name__)

DESCRIPTION = """Convert a dataset into FLIP HDF5 shards (shard-NNNNN.h5), manifest.parquet (one row per instance),
rejects.parquet (every skipped record with its reason) and index.json (written last), directly under --out.
One Ray task per shard; rerunning the same command skips the shards that are complete and intact and redoes the rest,
producing byte-identical output."""


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    from flip_core.convert.run import DEFAULT_SHARD_SIZE
    from flip_core.images import DEFAULT_MAX_PIXELS

    group = parser.add_argument_group("conversion")
    group.add_argument("--out", type=Path, required=True, help="output directory (shards, manifest, rejects, index)")
    group.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                       help=f"images per shard (default {DEFAULT_SHARD_SIZE})")
    group.add_argument("--num-workers", type=int, default=2,
                       help="shard tasks running at once; a local Ray gets this many CPUs (default 2)")
    group.add_argument("--ray-address", default=None,
                       help="existing Ray cluster to use ('auto' or host:port); default: start a local one")
    group.add_argument("--overwrite", action="store_true",
                       help="delete previous outputs in --out instead of resuming")
    group.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help=f"reject images with more pixels (decompression bombs; default {DEFAULT_MAX_PIXELS})")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--summary-json", type=Path, default=None, help="also write the summary to this JSON file")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``flip convert`` with one sub-command per entry of ``datasets_spec.SPECS``."""
    parser = subparsers.add_parser("convert", help="convert a dataset into FLIP HDF5 shards + a Parquet manifest (Ray)",
                                   description=DESCRIPTION)
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for name in sorted(SPECS):
        try:
            module = importlib.import_module(SPECS[name])
        except Exception as exc:  # a broken spec module must not take the other formats down
            sub = formats.add_parser(name, help=f"(unavailable: {exc})")
            sub.set_defaults(func=lambda args, exc=exc: _unavailable(args, exc))
            continue
        doc = (module.__doc__ or "").strip()
        sub = formats.add_parser(name, help=doc.splitlines()[0] if doc else name, description=DESCRIPTION,
                                 epilog=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_cli_arguments(sub.add_argument_group(f"{name} source"))
        _common_arguments(sub)
        sub.set_defaults(func=run, spec_module=module)
    return parser


def _unavailable(args: argparse.Namespace, exc: Exception) -> int:
    print(f"flip convert {args.format}: the spec module could not be imported: {exc}", file=sys.stderr)
    return 2


def format_summary(summary) -> str:
    """Plain-text summary printed at the end of ``flip convert``."""
    lines = [
        f"dataset      {summary.dataset}",
        f"output       {summary.out_dir}",
        f"images       {summary.images}",
        f"instances    {summary.instances}",
        f"shards       {summary.shards} ({summary.skipped_shards} already done, skipped)",
        f"rejects      {summary.rejects}",
    ]
    lines += [f"  {reason:<24} {n}" for reason, n in sorted(summary.rejects_by_reason.items())]
    lines += [
        f"wall time    {summary.wall_s:.2f} s",
        f"throughput   {summary.images_per_s:.1f} images/s, {summary.instances_per_s:.1f} instances/s",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run one conversion from parsed arguments; exit code 0 on success, 2 on malformed input."""
    from flip_core.convert.run import convert_dataset
    from flip_core.env import apply_local_defaults

    apply_local_defaults()
    try:
        spec = args.spec_module.from_cli_args(args)
        # A bucketing spec (SA-1B, spec 1.4) is converted as one dataset per resolution bucket, in OUT/<bucket>/.
        targets = (
            {key: (sub, args.out / key) for key, sub in spec.buckets().items()}
            if getattr(spec, "bucketing", False) else {"": (spec, args.out)}
        )
        summaries = {}
        for key, (sub_spec, out_dir) in targets.items():
            summaries[key] = convert_dataset(
                sub_spec, out_dir, shard_size=args.shard_size, num_workers=args.num_workers,
                ray_address=args.ray_address, overwrite=args.overwrite, progress=not args.no_progress,
                max_pixels=args.max_pixels,
            )
            print(format_summary(summaries[key]))
    except (SpecError, ValueError) as exc:
        print(f"flip convert {args.format}: error: {exc}", file=sys.stderr)
        return 2
    if args.summary_json is not None:
        payload = {key or "all": s.to_dict() for key, s in summaries.items()}
        payload = payload["all"] if list(payload) == ["all"] else payload
        args.summary_json.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return 0
