"""The ``flip`` command line.

Each subcommand lives next to the code it drives, in a module exposing ``add_parser(subparsers)`` which registers
the subcommand and sets ``func`` (called with the parsed ``argparse.Namespace``; its return value is the exit
code). Modules are imported only when their subcommand runs, so ``flip --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flip_core.logging_utils import init_logging

# name -> (module, one-line help). Keep the list sorted by pipeline stage.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("flip_core.convert.cli", "convert a dataset into FLIP HDF5 shards + a Parquet manifest (Ray)"),
    "train": ("flip_core.train.cli", "train a FLIP model with DeepSpeed on a Ray cluster (Ray Train)"),
    "evaluate": ("flip_core.eval.cli", "evaluate checkpoints on converted benchmarks (Ray fan-out) and write a report"),
    "export-onnx": ("flip_core.export.cli", "export a checkpoint to ONNX encoder/predictor graphs with a parity check"),
    "run": ("flows.cli", "run convert -> train -> evaluate as one Prefect flow (embedded defaults)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flip",
        description="FLIP Pipeline: convert datasets, train and evaluate FLIP models at scale.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == wanted:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    init_logging(verbose=args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
