"""A killed ``flip evaluate`` leaves no half files and resumes without recomputing finished tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flip_core.manifest", reason="flip_core.manifest (open_dataset) has not landed yet")

from flip_core.eval import EvalConfig, evaluate  # noqa: E402
from tests.eval_support import build_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_kill_then_resume(tmp_path):
    data = build_dataset(tmp_path / "data", "slow", shards=8, images_per_shard=2, objects=2, size=(160, 240),
                         ignore_band=True)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flip_core.cli", "evaluate", "--data", str(data), "--out", str(out),
           "--protocol", "clicks", "--num-workers", "0", "--max-clicks", "10"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if list((out / "results").rglob("*.parquet")) if (out / "results").exists() else []:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "evaluation finished before it could be killed; make the workload bigger"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    finished = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.parquet")}
    assert 1 <= len(finished) < 8
    result = evaluate(EvalConfig(checkpoints=(), data=(str(data),), out_dir=str(out), protocols=("clicks",),
                                 num_workers=0, max_clicks=10))
    assert len(result.tasks_skipped) == len(finished)
    assert len(result.tasks_run) == 8 - len(finished)
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was recomputed"
    assert len(list((out / "results").rglob("*.parquet"))) == 8
    assert not list(out.rglob("*.tmp-*"))
