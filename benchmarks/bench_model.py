"""FLIP model speed on CPU: packed attention back-ends against the dense per-sample reference, in the same run.

Measures, per model size and attention back-end:

- ``forward``: batch 1, 512 patch tokens (+8 registers), 2048 query points, ``torch.inference_mode`` (the
  evaluation shape: encoder + KV cache + one decoder call);
- ``encode``: the encoder part of that forward alone (patch embedding, layers, mask-head K/V);
- ``train step``: forward + BCE + backward at batch 64 samples, token counts drawn like reference training
  (``cython_ops.sample_num_tokens(32, 2048, 512)``, Beta(2, 6.4) on [32, 2048]), 2048 query points per sample.

Back-ends are interleaved within every repeat so load drift hits them equally; numbers are medians. Usage::

    .venv/bin/python benchmarks/bench_model.py --models tiny small --repeats 5 --train-repeats 3 --out bench.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from flip_core.model import build_flip_model, mask_loss
from flip_core.model.synthetic import synthetic_batch


def _token_counts(batch: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    try:
        from cython_ops import sample_num_tokens
        return [int(sample_num_tokens(32, 2048, 512, rng)) for _ in range(batch)]
    except ImportError:  # same distribution (spec 2.3) without the compiled ops
        return [int(32 + rng.beta(2.0, 6.4) * 2016) for _ in range(batch)]


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_size(name: str, backends: list[str], repeats: int, train_repeats: int, train_batch: int,
               queries: int, tokens: int, seed: int) -> dict[str, dict[str, float]]:
    model = build_flip_model(name, seed=seed)
    sizes = model.config.patch_sizes
    one = synthetic_batch(sizes, [tokens], [queries], generator=torch.Generator().manual_seed(seed),
                          with_targets=False)
    counts = _token_counts(train_batch, seed)
    train = synthetic_batch(sizes, counts, [queries] * train_batch, generator=torch.Generator().manual_seed(seed))
    times: dict[str, dict[str, list[float]]] = {b: {"forward": [], "encode": [], "train": []} for b in backends}

    def forward():
        with torch.inference_mode():
            model(one)

    def encode():
        with torch.inference_mode():
            model.encode(one)

    def train_step():
        model.zero_grad(set_to_none=True)
        mask_loss(model(train), train.targets).backward()

    model.eval()
    for b in backends:  # warm-up
        model.attention = b
        forward()
    for _ in range(repeats):
        for b in backends:
            model.attention = b
            times[b]["forward"].append(_time(forward))
            times[b]["encode"].append(_time(encode))
    model.train()
    for _ in range(train_repeats):
        for b in backends:
            model.attention = b
            times[b]["train"].append(_time(train_step))
    meta = {"train_tokens_mean": float(np.mean(counts)), "train_tokens_max": float(max(counts))}
    out = {b: {k: statistics.median(v) * 1e3 for k, v in t.items() if v} | meta for b, t in times.items()}
    for b, t in times.items():
        if t["train"]:
            out[b]["train_min"] = min(t["train"]) * 1e3
    return out


def to_markdown(results: dict, args: argparse.Namespace) -> str:
    ref = args.backends[-1]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Medians of {args.repeats} (latency) / {args.train_repeats} (train) runs.",
        "",
        f"| model | attention | forward b=1, {args.tokens} tok, {args.queries} q (ms) | encode b=1 (ms) "
        f"| train step b={args.train_batch}, median (ms) | min (ms) "
        f"| train speed-up vs {ref} (median / min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_backend in results.items():
        base = per_backend[ref]
        for b, r in per_backend.items():
            speed = "-"
            if r.get("train"):
                speed = f"{base['train'] / r['train']:.2f}x / {base['train_min'] / r['train_min']:.2f}x"
            lines.append(f"| {name} | {b} | {r['forward']:.1f} | {r['encode']:.1f} | "
                         f"{r.get('train', float('nan')):.0f} | {r.get('train_min', float('nan')):.0f} | {speed} |")
    first = next(iter(results.values()))[ref]
    lines += ["", f"Train batch: {args.train_batch} samples, mean {first['train_tokens_mean']:.0f} / max "
                  f"{first['train_tokens_max']:.0f} patch tokens per sample, {args.queries} queries per sample."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--backends", nargs="+", default=["split", "padded", "dense"],
                        help="attention back-ends; the LAST one is the baseline (default: dense)")
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats (default 5)")
    parser.add_argument("--train-repeats", type=int, default=3, help="training-step repeats (default 3)")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        results[name] = bench_size(name, args.backends, args.repeats, args.train_repeats, args.train_batch,
                                   args.queries, args.tokens, args.seed)
        print(f"done {name}", flush=True)
    md = to_markdown(results, args)
    print(md)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(md + "\n")


if __name__ == "__main__":
    main()
