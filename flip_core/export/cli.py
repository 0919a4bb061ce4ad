"""``flip export-onnx --checkpoint CKPT --out DIR``: ONNX encoder + predictor graphs, onnxruntime parity check."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DESCRIPTION = """Export a FLIP checkpoint (ours, or the authors' Lightning .ckpt) to two ONNX graphs in --out:
flip-encoder.onnx (patches_p1..p16 float [0,1], coords_p1..p16 frame M, position (1,6) frame M -> k_cached,
v_cached of shape (1, heads, tokens, head_dim)) and flip-predictor.onnx (position, mask_coordinates (n,2) frame M,
k_cached, v_cached -> mask_logits (n,)). Token and query axes are dynamic. The command then runs both graphs in
onnxruntime on a random sample, compares the logits with the PyTorch model, prints the maximum absolute difference
and fails (exit 1) if it exceeds --tolerance. export.json in --out records the model, opset and parity numbers."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``flip export-onnx``."""
    parser = subparsers.add_parser(
        "export-onnx", help="export a checkpoint to ONNX encoder/predictor graphs with a parity check",
        description=DESCRIPTION)
    parser.add_argument("--checkpoint", type=Path, required=True, help="FLIP checkpoint (.ckpt) to export")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--model-name", default=None, choices=["tiny", "small", "middle", "large"],
                        help="model size for checkpoints without our metadata (default: inferred from shapes)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="maximum allowed absolute logit difference ONNX vs PyTorch (default 1e-4)")
    parser.add_argument("--parity-queries", type=int, default=4096,
                        help="query points in the parity check (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parity sample (default 0)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export, check parity, print a summary; 0 on success, 1 when parity fails."""
    from flip_core.export.onnx import export_onnx, onnx_parity
    from flip_core.model import load_flip_checkpoint

    model = load_flip_checkpoint(args.checkpoint, model_name=args.model_name)
    enc, pred = export_onnx(model, args.out, opset=args.opset)
    parity = onnx_parity(model, enc, pred, seed=args.seed, num_queries=args.parity_queries)
    ok = parity["max_abs_diff"] <= args.tolerance
    summary = {"checkpoint": str(args.checkpoint), "model": model.config.to_dict(), "opset": args.opset,
               "encoder": enc.name, "predictor": pred.name, "parity": parity, "tolerance": args.tolerance,
               "parity_ok": ok}
    (Path(args.out) / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"FLIP-{model.config.name}: wrote {enc} ({enc.stat().st_size / 1e6:.2f} MB) and {pred} "
          f"({pred.stat().st_size / 1e6:.2f} MB), opset {args.opset}")
    print(f"onnxruntime parity: max abs logit diff {parity['max_abs_diff']:.3g} "
          f"(mean {parity['mean_abs_diff']:.3g}, logit std {parity['logit_std']:.3g}, "
          f"{parity['num_tokens']} tokens, {parity['num_queries']} queries) -> "
          f"{'OK' if ok else 'FAIL'} (tolerance {args.tolerance:g})")
    return 0 if ok else 1
