"""FLIP model speed on CPU: packed attention back-ends against the dense per-sample reference, in the same run.

Measures, per model size and attention back-end:

- ``forward``: batch 1, 512 patch tokens (+8 registers), 2048 query points, ``torch.inference_mode`` (the
  evaluation shape: encoder + KV cache + one decoder call);
- ``encode``: the encoder part of that forward alone (patch embedding, layers, mask-head K/V);
- ``train step``: forward + BCE + backward at batch 64 samples, token counts drawn like reference training
  (``cython_ops.sample_num_tokens(32, 2048, 512)``, Beta(2, 6.4) on [32, 2048]), 2048 query points per sample.

- train-step system CPU time and minor page faults (``getrusage``, medians): the memory-mapping cost of each
  back-end's allocations inside a step;
- ``attention only``: the packed attention calls of that training step alone, forward + backward, on random
  q/k/v with the step's layout: the encoder self-attention of all L layers and the mask head's cross-attention
  (2048 queries per sample against the sample's tokens), with their GFLOP/s next to a 4096^3 sgemm measured in the
  same run. Comparing its ratio with the train-step ratio separates the attention arithmetic from the memory
  effects of the dense path inside a full step (it keeps every sample's L x L probabilities for backward).

Allocator: by default the script re-runs itself under the glibc settings the training workers use
(``flip_core.env.TRAINING_MALLOC_TUNABLES``: large frees are kept for reuse instead of being unmapped), so neither
back-end pays page faults for re-mapping its activations every step; ``--malloc default`` keeps glibc's defaults
(then the dense path's per-sample L x L tensors cost it 0.5-1.4 million page faults per FLIP-small step, and the
split path's large activations cost it a similar number depending on the allocator's state, which made earlier
step ratios swing between runs). The table header states which one ran.

Back-ends are interleaved within every repeat so load drift hits them equally; numbers are medians. Usage::

    .venv/bin/python benchmarks/bench_model.py --models tiny small --repeats 5 --train-repeats 3 --out bench.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch

from flip_core.env import reexec_with_training_malloc
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


def _time_with_faults(fn) -> tuple[float, float, int]:
    """(wall s, system CPU s, minor page faults) of one call (the latter two from ``getrusage``, whole process)."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    wall = _time(fn)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt


def bench_size(name: str, backends: list[str], repeats: int, train_repeats: int, train_batch: int,
               queries: int, tokens: int, seed: int) -> dict[str, dict[str, float]]:
    model = build_flip_model(name, seed=seed)
    sizes = model.config.patch_sizes
    one = synthetic_batch(sizes, [tokens], [queries], generator=torch.Generator().manual_seed(seed),
                          with_targets=False)
    counts = _token_counts(train_batch, seed)
    train = synthetic_batch(sizes, counts, [queries] * train_batch, generator=torch.Generator().manual_seed(seed))
    times: dict[str, dict[str, list[float]]] = {
        b: {"forward": [], "encode": [], "train": [], "train_sys": [], "train_faults": []} for b in backends}

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
    if train_repeats:
        for b in backends:  # warm-up: first-touch allocations of a back-end are not part of its steady state
            model.attention = b
            train_step()
    for _ in range(train_repeats):
        for b in backends:
            model.attention = b
            wall, sys_s, faults = _time_with_faults(train_step)
            times[b]["train"].append(wall)
            times[b]["train_sys"].append(sys_s)
            times[b]["train_faults"].append(faults)
    meta = {"train_tokens_mean": float(np.mean(counts)), "train_tokens_max": float(max(counts))}
    out = {b: {k: statistics.median(v) * (1 if k == "train_faults" else 1e3) for k, v in t.items() if v} | meta
           for b, t in times.items()}
    for b, t in times.items():
        if t["train"]:
            out[b]["train_min"] = min(t["train"]) * 1e3
    return out


def bench_attention(name: str, backends: list[str], repeats: int, train_batch: int, queries: int,
                    seed: int) -> dict[str, dict[str, float]]:
    """Attention-only forward + backward times (ms) of one training step's layout, per back-end."""
    from flip_core.model import build_flip_model
    from flip_core.model.attention import SeqLayout, varlen_attention

    config = build_flip_model(name, seed=seed).config
    heads, layers = config.num_heads, config.layers
    d_kq, d_v = config.kq_expansion * config.channels // heads, config.v_expansion * config.channels // heads
    lens = [n + config.num_registers for n in _token_counts(train_batch, seed)]
    g = torch.Generator().manual_seed(seed)

    def rand(n: int, d: int) -> torch.Tensor:
        return torch.randn(heads, n, d, generator=g).requires_grad_()

    n_tok, n_q = sum(lens), queries * train_batch
    q, k, v, qm = rand(n_tok, d_kq), rand(n_tok, d_kq), rand(n_tok, d_v), rand(n_q, d_kq)
    flops_enc = 3 * 2 * heads * sum(n * n * (d_kq + d_v) for n in lens) * layers  # fwd + ~2x fwd for backward
    flops_head = 3 * 2 * heads * sum(queries * n * (d_kq + d_v) for n in lens)
    times = {b: {"encoder": [], "head": []} for b in backends}
    for _ in range(repeats):
        for b in backends:
            layout = SeqLayout(lens, lens, "cpu", b)
            t = _time(lambda: [varlen_attention(q, k, v, layout).sum().backward() for _ in range(layers)])
            times[b]["encoder"].append(t)
            cross = layout.with_queries([queries] * train_batch)
            times[b]["head"].append(_time(lambda: varlen_attention(qm, k, v, cross).sum().backward()))
    out = {}
    for b, t in times.items():
        enc, head = statistics.median(t["encoder"]), statistics.median(t["head"])
        out[b] = {"encoder": enc * 1e3, "head": head * 1e3, "total": (enc + head) * 1e3,
                  "gflops": (flops_enc + flops_head) / (enc + head) / 1e9}
    return out


def sgemm_gflops(repeats: int = 3, n: int = 4096) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / statistics.median(_time(lambda: a @ b) for _ in range(repeats)) / 1e9


def attention_markdown(results: dict, backends: list[str], peak: float) -> str:
    ref = backends[-1]
    lines = [f"Attention only (forward + backward, the train step's layout); sgemm 4096^3 in the same run: "
             f"{peak:.0f} GFLOP/s.", "",
             "| model | attention | encoder self-attention, all layers (ms) | mask-head cross-attention (ms) "
             f"| total A (ms) | GFLOP/s (share of sgemm) | A_{ref} / A |", "|---|---|---|---|---|---|---|"]
    for name, per_backend in results.items():
        base = per_backend[ref]["total"]
        for b, r in per_backend.items():
            lines.append(f"| {name} | {b} | {r['encoder']:.0f} | {r['head']:.0f} | {r['total']:.0f} | "
                         f"{r['gflops']:.0f} ({r['gflops'] / peak:.0%}) | {base / r['total']:.2f}x |")
    return "\n".join(lines)


def to_markdown(results: dict, args: argparse.Namespace) -> str:
    ref = args.backends[-1]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}. "
        f"Medians of {args.repeats} (latency) / {args.train_repeats} (train) runs.",
        "",
        f"| model | attention | forward b=1, {args.tokens} tok, {args.queries} q (ms) | encode b=1 (ms) "
        f"| train step b={args.train_batch}, median (ms) | min (ms) "
        f"| train speed-up vs {ref} (median / min) | train system CPU (ms) | train page faults |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_backend in results.items():
        base = per_backend[ref]
        for b, r in per_backend.items():
            speed = "-"
            if r.get("train"):
                speed = f"{base['train'] / r['train']:.2f}x / {base['train_min'] / r['train_min']:.2f}x"
            lines.append(f"| {name} | {b} | {r['forward']:.1f} | {r['encode']:.1f} | "
                         f"{r.get('train', float('nan')):.0f} | {r.get('train_min', float('nan')):.0f} | {speed} | "
                         f"{r.get('train_sys', float('nan')):.0f} | {r.get('train_faults', float('nan')):.0f} |")
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
    parser.add_argument("--attention-repeats", type=int, default=3,
                        help="repeats of the attention-only measurement (0 skips it; default 3)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--malloc", choices=["training", "default"], default="training",
                        help="glibc allocator settings: 'training' (default) re-runs under "
                             "flip_core.env.TRAINING_MALLOC_TUNABLES unless GLIBC_TUNABLES is set; 'default' keeps "
                             "glibc's defaults")
    args = parser.parse_args()
    if args.malloc == "training":
        reexec_with_training_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        results[name] = bench_size(name, args.backends, args.repeats, args.train_repeats, args.train_batch,
                                   args.queries, args.tokens, args.seed)
        print(f"done {name}", flush=True)
    md = to_markdown(results, args)
    if args.attention_repeats:
        attention = {name: bench_attention(name, args.backends, args.attention_repeats, args.train_batch,
                                           args.queries, args.seed) for name in args.models}
        md += "\n\n" + attention_markdown(attention, args.backends, sgemm_gflops())
    print(md)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(md + "\n")


if __name__ == "__main__":
    main()
