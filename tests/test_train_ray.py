"""End to end: ``flip_core.train.train`` / ``flip train`` on Ray Train with real DeepSpeed engines (gloo, 127.0.0.1)
on shards converted from ../shared/data/coco; bad-input checks before Ray starts.

Ray Train start-up and teardown cost ~20-40 s per run on the 2-core VM, so the module runs four trainings:
1 worker ZeRO 0 with an injected worker failure (FailureConfig restart), 2 workers ZeRO 2 uninterrupted, and the
same 2-worker run killed (SIGKILL of the whole `flip train` process group) after its step-3 checkpoint and resumed
with ``--resume``: it must continue at step 4 and give the uninterrupted run's loss sequence.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flip_core.train.config import DEEPSPEED_CONFIG_DIR, DataConfig, TrainConfig
from flip_core.train.launch import RunDirError, start_local_ray, train
from flip_core.train.loop import FAILURE_MARKER
from flip_core.train.metrics import read_metrics
from tests.flip_train_data import converted_coco

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STEPS = 6


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return converted_coco(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module's in-process trainings (train() uses it and leaves it running)."""
    import ray

    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _config(coco, run_dir, *, workers=1, zero=0, **kw) -> TrainConfig:
    data = DataConfig(manifests=(str(coco),), images_per_batch=1, loader_workers=1, mean_tokens=256,
                      max_tokens=512)
    return TrainConfig(model="tiny", data=data, run_dir=str(run_dir), steps=STEPS, seed=5, num_workers=workers,
                       deepspeed_config=str(DEEPSPEED_CONFIG_DIR / f"zero{zero}.json"), checkpoint_every=3,
                       log_every=1, **kw)


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")}


def test_one_worker_zero0_with_worker_failure_restart(coco, tmp_path):
    result = train(_config(coco, tmp_path / "run", fail_at_step=4))
    assert (tmp_path / "run" / FAILURE_MARKER).exists()  # the failure happened and Ray restarted from step 3
    assert result.final_step == STEPS and sorted(_losses(tmp_path / "run")) == list(range(1, STEPS + 1))
    ckpts = tmp_path / "run" / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"step-0000003.ckpt", "step-0000006.ckpt", "latest.ckpt",
                                                 "best.ckpt"}
    from flip_core.model import load_flip_checkpoint

    assert load_flip_checkpoint(result.latest_checkpoint).config.name == "tiny"
    assert (tmp_path / "run" / "ray" / "step-0000006" / "ds").is_dir()
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert len(rec["group_iou"]) == 7 and sum(rec["samples_per_group"]) == 2048 and rec["samples"] == 4
    assert rec["samples_per_s"] > 0 and rec["tokens_per_s"] > 0 and rec["lr"] == pytest.approx(6e-4)


@pytest.fixture(scope="module")
def uninterrupted(coco, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("two-workers") / "run"
    result = train(_config(coco, run_dir, workers=2, zero=2))
    return run_dir, result


def test_two_workers_zero2(uninterrupted):
    run_dir, result = uninterrupted
    assert result.final_step == STEPS and result.start_step == 0
    assert all(r["samples"] == 8 for r in read_metrics(run_dir / "metrics.jsonl"))  # 2 ranks x 1 image x 4
    files = {p.name for p in (run_dir / "ray" / "step-0000006" / "ds").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files


def _kill_after_checkpoint(cmd: list[str], marker: Path, timeout: float = 400) -> None:
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), "the run never wrote its step-3 checkpoint"
        time.sleep(1.0)  # let Ray finish registering the checkpoint
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill_leftovers(proc.pid)


def _kill_leftovers(sid: int) -> None:
    """SIGKILL processes still in the killed run's session (Ray daemons it started), by PID."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, s = map(int, line.split())
        if s == sid:
            os.kill(pid, signal.SIGKILL)


def test_killed_run_resumes_with_identical_losses(coco, uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "flip_core.cli", "train", "--model", "tiny", "--data", str(coco), "--out",
           str(run_dir), "--steps", str(STEPS), "--num-workers", "2", "--zero", "2", "--seed", "5",
           "--images-per-batch", "1", "--checkpoint-every", "3", "--log-every", "1", "--mean-tokens", "256",
           "--max-tokens", "512"]
    _kill_after_checkpoint(cmd, run_dir / "ray" / "step-0000003" / "ds")
    assert 3 <= max(_losses(run_dir)) < STEPS  # really interrupted
    result = train(_config(coco, run_dir, workers=2, zero=2, resume=True))
    assert result.start_step == 3 and result.final_step == STEPS
    got, want = _losses(run_dir), _losses(ref_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert [got[s] for s in range(1, STEPS + 1)] == pytest.approx([want[s] for s in range(1, STEPS + 1)],
                                                                  rel=1e-6)


def test_bad_run_directories_and_inputs(coco, uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    with pytest.raises(RunDirError, match="already holds a FLIP-tiny run; pass --resume"):
        train(_config(coco, ref_dir, workers=2, zero=2))
    with pytest.raises(RunDirError, match="holds a FLIP-tiny run, not FLIP-small"):
        train(_config(coco, ref_dir, workers=2, zero=2, resume=True).replace(model="small"))
    with pytest.raises(RunDirError, match="holds no training run"):
        train(_config(coco, tmp_path / "empty", resume=True))
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "train_config.json").write_text(json.dumps(_config(coco, tmp_path).to_dict()))
    with pytest.raises(RunDirError, match="no checkpoint in"):
        train(_config(coco, tmp_path / "fresh", resume=True))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        train(_config(coco, tmp_path / "x").replace(deepspeed_config=str(bad)))
    assert not (tmp_path / "x").exists()  # nothing written before the inputs check out
    broken = tmp_path / "broken"
    shutil.copytree(coco, broken)
    shard = sorted(broken.glob("shard-*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    cfg = _config(coco, tmp_path / "y")
    with pytest.raises(ValueError, match=f"{shard.name}: sha256 differs"):
        train(cfg.replace(data=DataConfig(manifests=(str(broken),))))
    assert not (tmp_path / "y").exists()


def test_worker_env_reaches_glibc_at_process_start(monkeypatch):
    """``training_worker_env`` goes to Ray as ``runtime_env`` env_vars, which Ray sets when it starts the worker
    process, so glibc applies GLIBC_TUNABLES: a freed 64 MiB buffer is reused without page faults, while a worker
    with glibc's defaults maps it afresh. A user's own GLIBC_TUNABLES wins."""
    import ray

    from flip_core.env import TRAINING_MALLOC_TUNABLES, training_worker_env

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    env = training_worker_env()
    assert env["GLIBC_TUNABLES"] == TRAINING_MALLOC_TUNABLES and env["DS_ACCELERATOR"] == "cpu"
    assert "DS_ACCELERATOR" not in training_worker_env(use_gpu=True)

    def refault_count() -> tuple[str, int]:
        import resource

        import numpy as np

        np.ones(64 << 20, np.uint8)  # touched and freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        again = np.ones(64 << 20, np.uint8)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del again
        return os.environ.get("GLIBC_TUNABLES", ""), faults

    tuned = ray.remote(num_cpus=0, runtime_env={"env_vars": env})(refault_count)
    plain = ray.remote(num_cpus=0, runtime_env={"env_vars": {**env, "GLIBC_TUNABLES": ""}})(refault_count)
    (seen, tuned_faults), (_, plain_faults) = ray.get([tuned.remote(), plain.remote()])
    assert seen == TRAINING_MALLOC_TUNABLES
    assert tuned_faults < 16 and plain_faults > 16, (tuned_faults, plain_faults)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert training_worker_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
