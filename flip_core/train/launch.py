"""``flip_core.train.train(config) -> TrainResult``: checks, then a Ray Train ``TorchTrainer`` run.

Before any worker starts, the driver checks (each failure is a clear error naming the file):

* every manifest opens and every shard matches its sha256 in ``index.json`` (missing/corrupt shard);
* the DeepSpeed config parses;
* the run directory: a new run needs an empty/new ``RUN_DIR`` (else: pass ``--resume``); ``--resume`` needs a
  checkpoint under ``RUN_DIR/ray`` and the same model size as ``RUN_DIR/train_config.json``.

The trainer runs ``flip_core.train.loop.train_worker`` on ``num_workers`` workers (gloo on CPU, nccl with
``use_gpu``), with ``FailureConfig(max_failures)`` (a failed worker group restarts from the last reported
checkpoint) and ``CheckpointConfig(num_to_keep=keep_checkpoints)``. Ray storage is ``RUN_DIR/ray``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from flip_core.env import apply_local_defaults
from flip_core.train.config import TrainConfig, TrainResult
from flip_core.train.metrics import read_metrics

__all__ = ["train", "latest_ray_checkpoint", "prepare_run_dir", "RunDirError", "start_local_ray"]

logger = logging.getLogger(__name__)

RAY_DIR = "ray"
CONFIG_NAME = "train_config.json"
_STEP_DIR = re.compile(r"^step-(\d{7})$")


class RunDirError(ValueError):
    """The run directory does not fit the request (exists without --resume, nothing to resume, other model)."""


def latest_ray_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete ``RUN_DIR/ray/step-XXXXXXX`` checkpoint (holds DeepSpeed's ``ds`` tag), or None."""
    root = Path(run_dir) / RAY_DIR
    found = [p for p in root.glob("step-*") if _STEP_DIR.match(p.name) and (p / "ds").is_dir()]
    return max(found, key=lambda p: int(p.name[5:]), default=None)


def prepare_run_dir(config: TrainConfig) -> Path | None:
    """Check ``config.run_dir`` against ``config.resume`` and write ``train_config.json``.

    Returns:
        The checkpoint to resume from (None for a new run).

    Raises:
        RunDirError: see the module docstring.
    """
    run_dir = Path(config.run_dir)
    saved = run_dir / CONFIG_NAME
    checkpoint = None
    if config.resume:
        if not saved.is_file():
            raise RunDirError(f"--resume: {run_dir} holds no training run ({CONFIG_NAME} missing)")
        previous = json.loads(saved.read_text())
        if previous["model"] != config.model:
            raise RunDirError(f"--resume: {run_dir} holds a FLIP-{previous['model']} run, not FLIP-{config.model}")
        checkpoint = latest_ray_checkpoint(run_dir)
        if checkpoint is None:
            raise RunDirError(f"--resume: no checkpoint in {run_dir / RAY_DIR} (the run saved none yet); "
                              "start it again without --resume in a new directory")
    elif run_dir.exists() and any(run_dir.iterdir()):
        model = json.loads(saved.read_text())["model"] if saved.is_file() else None
        what = f"a FLIP-{model} run" if model else "files"
        raise RunDirError(f"{run_dir} already holds {what}; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return checkpoint


def _check_inputs(config: TrainConfig) -> None:
    from flip_core.train.data_setup import check_training_data
    from flip_core.train.engine import load_deepspeed_config

    load_deepspeed_config(config.deepspeed_config)
    check_training_data(config.data)


def _trainer(config: TrainConfig, resume_from: Path | None):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from flip_core.env import training_worker_env
    from flip_core.train.loop import train_worker

    env = training_worker_env(use_gpu=config.use_gpu)
    run_config = ray.train.RunConfig(
        name=RAY_DIR, storage_path=str(Path(config.run_dir).resolve()),
        failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        worker_runtime_env={"env_vars": env})
    return TorchTrainer(
        train_worker, train_loop_config={"train": config.to_dict(),
                                         "resume_from": str(resume_from) if resume_from else None},
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                               resources_per_worker={"CPU": config.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"), run_config=run_config)


def _result(config: TrainConfig, start_step: int, wall: float) -> TrainResult:
    records = [r for r in read_metrics(Path(config.run_dir) / "metrics.jsonl") if r["step"] > start_step]
    if not records:
        raise RuntimeError(f"training in {config.run_dir} finished without recording a step")
    rejects: dict[str, int] = {}
    for r in records:
        for k, v in r.get("redraws_rank0", {}).items():
            rejects[k] = rejects.get(k, 0) + v
    ckpt_dir = Path(config.run_dir) / "checkpoints"
    latest, best = ckpt_dir / "latest.ckpt", ckpt_dir / "best.ckpt"
    return TrainResult(
        run_dir=str(config.run_dir), model=config.model, start_step=start_step, final_step=records[-1]["step"],
        final_loss=records[-1]["loss"], final_iou=records[-1]["iou"],
        samples_per_s=sum(r["samples"] for r in records) / sum(r["step_s"] for r in records), wall_s=wall,
        metrics_path=str(Path(config.run_dir) / "metrics.jsonl"),
        latest_checkpoint=str(latest) if latest.is_file() else None,
        best_checkpoint=str(best) if best.is_file() else None, rejects=rejects)


def start_local_ray(num_cpus: int, dashboard: bool = False) -> str:
    """Start a private local Ray (dashboard optional) whose tasks and actors all know its address; returns it.

    Ray Train's helper actors (e.g. its ``PlacementGroupCleaner``) look the cluster up by scanning for GCS
    processes when ``RAY_ADDRESS`` is unset, and fail with "Found multiple active Ray instances" on a machine that
    runs other Ray clusters; a failed worker group then waits for its placement group for minutes. So the GCS
    port is chosen here (``RAY_GCS_SERVER_PORT``) and ``RAY_ADDRESS`` is put into the job's runtime environment.
    """
    import os

    import ray

    from flip_core.train.engine import free_port

    address = f"127.0.0.1:{free_port()}"
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = address.rsplit(":", 1)[1]
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                 runtime_env={"env_vars": {"RAY_ADDRESS": address}})
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT")
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    return address


def train(config: TrainConfig) -> TrainResult:
    """Train FLIP as configured (module docstring); returns a summary once every step is done.

    Raises:
        FileNotFoundError / ValueError: bad manifest, shard or DeepSpeed config (before Ray starts).
        RunDirError: run directory conflicts.
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    import ray

    t0 = time.perf_counter()
    apply_local_defaults(use_gpu=config.use_gpu)
    _check_inputs(config)
    resume_from = prepare_run_dir(config)
    start_step = int(resume_from.name[5:]) if resume_from else 0
    if start_step >= config.steps:
        raise RunDirError(f"--resume: the latest checkpoint is at step {start_step}, --steps {config.steps} "
                          "leaves nothing to do")
    started_ray = not ray.is_initialized()
    if started_ray and config.ray_address:
        ray.init(address=config.ray_address)
    elif started_ray:
        start_local_ray(config.num_workers * config.cpus_per_worker, config.dashboard)
    try:
        _trainer(config, resume_from).fit()
    finally:
        if started_ray:
            ray.shutdown()
    return _result(config, start_step, time.perf_counter() - t0)
