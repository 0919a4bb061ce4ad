"""Benchmark cython_ops on the spec's 640x480 example against the NumPy reference, in the same run.

Example (spec 8): random 640x480 RGB image, 90x35 px ellipse mask at 30 degrees, position from its moments
(frame N), 512 tokens, patch sizes 1/2/4/8/16, thr 2.67 / coverage 1.44 (and the training mode with random
thr/coverage), 2048 mask targets with the default group sizes. Each row is the median (and p10/p90) of ``--iters``
calls after ``--warmup`` calls, wall clock and thread CPU time; the ratio is NumPy median / Cython median (wall).
Times include the Python wrappers (validation, frame conversion), i.e. what a data loader pays per call.
Single-threaded.

    .venv/bin/python benchmarks/bench_cython_ops.py --iters 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from cython_ops import DEFAULT_SAMPLES_PER_GROUP, sample_mask_targets, sample_patches
from cython_ops._example import spec_example

SIZES = (1, 2, 4, 8, 16)


def _time(fn, iters: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-call wall times and thread CPU times in ms (CPU time is less sensitive to a busy machine)."""
    for _ in range(warmup):
        fn()
    wall, cpu = np.empty(iters), np.empty(iters)
    for i in range(iters):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        wall[i], cpu[i] = time.perf_counter() - t, time.thread_time() - c
    return wall * 1e3, cpu * 1e3


def _cases(backend: str):
    image, mask, position = spec_example()
    rng = np.random.default_rng(1234)
    return {
        "sample_patches (512 tokens, thr 2.67, cov 1.44)": lambda: sample_patches(
            image, position, 512, SIZES, 2.67, 1.44, rng, backend=backend),
        "sample_patches (512 tokens, training: random thr/cov)": lambda: sample_patches(
            image, position, 512, SIZES, None, None, rng, backend=backend),
        "sample_mask_targets (2048 points)": lambda: sample_mask_targets(
            mask, position, DEFAULT_SAMPLES_PER_GROUP, rng, backend=backend),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=1000, help="timed calls per case and backend (default 1000)")
    parser.add_argument("--ref-iters", type=int, default=0,
                        help="timed calls for the NumPy reference (default: same as --iters)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    cy, ref = _cases("cython"), _cases("numpy")
    rows = []
    for name in cy:
        t_cy, c_cy = _time(cy[name], args.iters, args.warmup)
        t_np, _ = _time(ref[name], args.ref_iters or args.iters, args.warmup)
        rows.append({
            "case": name,
            "cython_median_ms": float(np.median(t_cy)),
            "cython_p10_ms": float(np.percentile(t_cy, 10)),
            "cython_p90_ms": float(np.percentile(t_cy, 90)),
            "cython_cpu_median_ms": float(np.median(c_cy)),
            "numpy_median_ms": float(np.median(t_np)),
            "speedup_vs_numpy": float(np.median(t_np) / np.median(t_cy)),
        })
    print(f"# cython_ops benchmark: {platform.processor() or platform.machine()}, {args.iters} calls/case, "
          f"numpy {np.__version__}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| call | Cython wall median (p10-p90) ms | Cython CPU median ms | NumPy reference median ms "
          "| NumPy / Cython |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['cython_median_ms']:.3f} ({r['cython_p10_ms']:.3f}-{r['cython_p90_ms']:.3f}) "
              f"| {r['cython_cpu_median_ms']:.3f} | {r['numpy_median_ms']:.2f} | {r['speedup_vs_numpy']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"iters": args.iters, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
