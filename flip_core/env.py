"""Process environment defaults for Ray, DeepSpeed and Prefect (stack notes: loopback only, no telemetry)."""

from __future__ import annotations

import os
import sys

LOCAL_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single-node Ray binds 127.0.0.1
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def _local_defaults(use_gpu: bool) -> dict[str, str]:
    """:data:`LOCAL_DEFAULTS`, without ``DS_ACCELERATOR`` when ``use_gpu``."""
    return {k: v for k, v in LOCAL_DEFAULTS.items() if not (use_gpu and k == "DS_ACCELERATOR")}


def apply_local_defaults(use_gpu: bool = False) -> None:
    """Set the loopback/no-telemetry defaults unless the user set them; ``use_gpu`` leaves DS_ACCELERATOR alone."""
    for key, value in _local_defaults(use_gpu).items():
        os.environ.setdefault(key, value)


TRAINING_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=17179869184"
"""glibc allocator settings for training worker processes (``GLIBC_TUNABLES``; read by glibc at process start).

With glibc's defaults every allocation above the (dynamic, at most 32 MiB) mmap threshold gets fresh pages from the
kernel and gives them back when freed, so each CPU training step page-faults its large activations in again: about
0.9 million minor faults and 3-4 s of system time per FLIP-small step at batch 64 (``benchmarks/bench_model.py``).
Raising the mmap threshold to 4 GiB and the trim threshold to 16 GiB keeps freed memory in the process for reuse:
the same step drops from about 8 s to 6 s, and the loader's JPEG/mask buffers stop faulting too. The cost is that
a worker's resident memory stays at its peak (like jemalloc or tcmalloc retention). Ignored on non-glibc systems.
"""


def training_worker_env(use_gpu: bool = False) -> dict[str, str]:
    """Environment for Ray Train workers: :data:`LOCAL_DEFAULTS` (without ``DS_ACCELERATOR`` when ``use_gpu``) plus
    ``GLIBC_TUNABLES`` = :data:`TRAINING_MALLOC_TUNABLES`, unless the user's environment already sets it (then theirs
    is passed on unchanged)."""
    env = _local_defaults(use_gpu)
    env["GLIBC_TUNABLES"] = os.environ.get("GLIBC_TUNABLES", TRAINING_MALLOC_TUNABLES)
    return env


def reexec_with_training_malloc() -> None:
    """Restart this Python process (same ``sys.argv``) with ``GLIBC_TUNABLES`` = :data:`TRAINING_MALLOC_TUNABLES`
    unless it is already set (benchmarks use it to measure under the allocator settings the training workers run
    with). Returns only when nothing needed to change."""
    if "GLIBC_TUNABLES" in os.environ:
        return
    os.environ["GLIBC_TUNABLES"] = TRAINING_MALLOC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])
