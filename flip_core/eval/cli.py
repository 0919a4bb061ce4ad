"""``flip evaluate``: evaluate checkpoints (and the prompt-ellipse baseline) on converted benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)

EPILOG = """\
What it writes (OUT = --out):
  OUT/results/<method>/<dataset>/<shard>/<protocol>__<mode>.parquet   per-instance rows (inputs hash in metadata)
  OUT/calibration/<dataset>-<hash>.json                             baseline radii chosen by 2-fold cross-fitting
  OUT/report/summary.csv, summary.md                                one row per method x mode x dataset
  OUT/report/iou_by_size.png, miou_vs_clicks.png                    plots
<method> is <checkpoint stem>-<sha256[:8]> or "ellipse". Rerunning with the same settings skips every finished
(method, shard) task; a changed setting recomputes the affected files (never mixes old and new results).

Protocols:
  flip    the ground-truth Gaussian (mask moments) is the prompt; one IoU per instance (reference protocol)
  clicks  RITM click simulator, up to --max-clicks clicks; clicks become a Gaussian prompt via the adapter
          (flip_core/eval/adapter.py); NoC@85/90/95, NoF, mIoU@k
Ignore regions (GrabCut/Berkeley band, DAVIS void) are excluded from IoU and from click placement.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate checkpoints on converted benchmarks (Ray fan-out) and write a report",
        description="Evaluate FLIP checkpoints and the prompt-ellipse baseline on converted datasets: one Ray task "
        "per (checkpoint, shard), resumable per-instance Parquet results, aggregated CSV/Markdown/PNG report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", nargs="*", default=[], metavar="CKPT",
                   help="FLIP checkpoint file(s) (save_flip_checkpoint format); none = baseline only")
    p.add_argument("--data", nargs="+", required=True, metavar="MANIFEST_OR_DIR",
                   help="converted dataset(s): manifest.parquet, index.json, their directory, or a directory of "
                   "converted datasets")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (results, calibration, report)")
    p.add_argument("--protocol", default="flip,clicks", help="comma list of flip, clicks (default: both)")
    p.add_argument("--mode", default="box",
                   help="comma list of FLIP modes: full, box (5-sigma box, the reference's --optimized), "
                   "hierarchical (default: box)")
    p.add_argument("--no-baseline", action="store_true", help="do not evaluate the prompt-ellipse baseline")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="connect to this Ray cluster (default: start a local one on 127.0.0.1)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N",
                   help="tasks at the same time, 1 CPU each (default 2); 0 = run in this process without Ray")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--max-instances", type=int, default=None, metavar="N",
                   help="evaluate a seeded subset of at most N instances per dataset (default: all)")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks per instance in the click protocol (20)")
    p.add_argument("--target-iou", type=float, default=1.01,
                   help="stop clicking at this IoU (default 1.01: always run all clicks, as needed for mIoU@k)")
    p.add_argument("--num-tokens", type=int, default=512, help="FLIP input tokens (default 512)")
    p.add_argument("--overlap-threshold", type=float, default=2.67, help="patch overlap threshold (2.67)")
    p.add_argument("--coverage", type=float, default=1.44, help="patch coverage (1.44)")
    p.add_argument("--convention", choices=("exact", "reference"), default="exact",
                   help="frame conversion of the prompt (reference = released-checkpoint compatibility)")
    p.add_argument("--initial-sigma", type=float, default=0.1, metavar="FRAC",
                   help="click adapter: first-click Gaussian sigma as a fraction of the short side (0.1)")
    p.add_argument("--refine-iters", type=int, default=2, metavar="N",
                   help="click adapter: moment-refinement predictions after the first click (2)")
    p.add_argument("--click-radius", type=float, default=5.0, metavar="PX",
                   help="click adapter: radius of the click disks added to the region and forced in the output (5)")
    p.add_argument("--calibration-instances", type=int, default=200, metavar="N",
                   help="instances per fold used to choose the baseline radius (200)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per task (1)")
    p.set_defaults(func=run)
    return p


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def run(args: argparse.Namespace) -> int:
    from flip_core.env import apply_local_defaults
    from flip_core.eval import ClickAdapterConfig, EvalConfig, evaluate

    apply_local_defaults()
    try:
        config = EvalConfig(
            checkpoints=tuple(args.checkpoint),
            data=tuple(args.data),
            out_dir=args.out,
            protocols=_split(args.protocol),
            modes=_split(args.mode),
            baseline=not args.no_baseline,
            ray_address=args.ray_address,
            num_workers=args.num_workers,
            seed=args.seed,
            max_instances=args.max_instances,
            max_clicks=args.max_clicks,
            target_iou=args.target_iou,
            num_tokens=args.num_tokens,
            overlap_threshold=args.overlap_threshold,
            coverage=args.coverage,
            convention=args.convention,
            adapter=ClickAdapterConfig(initial_sigma_frac=args.initial_sigma, refine_iters=args.refine_iters,
                                       click_radius_px=args.click_radius),
            calibration_instances=args.calibration_instances,
            torch_threads=args.torch_threads,
        )
        result = evaluate(config)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"flip evaluate: error: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, RuntimeError) else 1
    print(result.to_markdown())
    return 0
