"""``train`` flow: the Ray Train launch of :func:`flip_core.train.train`, plus the ``training-summary`` artifact.

No Prefect retries here: worker failures are handled inside the run by Ray Train (``FailureConfig``, restart from the
last checkpoint), and a rerun with ``resume`` continues from the run directory's latest checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish, training_markdown
from flows.params import TrainParams
from flows.runtime import ray_runtime

__all__ = ["train", "train_task", "build_train_config"]


def build_train_config(data: list[str], run_dir: str, params: TrainParams, ray_address: str | None = None):
    """``TrainParams`` -> ``flip_core.train.TrainConfig``; ``params.overrides`` go to TrainConfig or DataConfig by name.

    Raises:
        ValueError: an override that is a field of neither, or a value the configs reject.
    """
    from flip_core.train.config import DataConfig, TrainConfig

    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(params.overrides) - data_fields - train_fields)
    if unknown:
        valid = sorted((data_fields | train_fields) - {"data", "manifests"})
        raise ValueError(f"unknown training override(s) {unknown}; valid: {valid}")
    data_over = {k: v for k, v in params.overrides.items() if k in data_fields}
    train_over = {k: v for k, v in params.overrides.items() if k in train_fields}
    extra = {"deepspeed_config": params.deepspeed_config} if params.deepspeed_config else {}
    return TrainConfig(model=params.model, data=DataConfig(manifests=tuple(data), **data_over), run_dir=run_dir,
                       steps=params.steps, seed=params.seed, num_workers=params.num_workers, use_gpu=params.use_gpu,
                       resume=params.resume, ray_address=ray_address, **extra, **train_over)


@task(name="train-model", cache_policy=NO_CACHE)
def train_task(data: list[str], run_dir: str, params: TrainParams, ray_address: str | None):
    """Run the training; returns ``flip_core.train.TrainResult``."""
    from flip_core.train import train as train_model

    config = build_train_config(data, run_dir, params, ray_address)
    get_run_logger().info("training FLIP-%s for %d steps on %s -> %s", params.model, params.steps,
                          ", ".join(data), run_dir)
    result = train_model(config)
    get_run_logger().info("trained to step %d: loss %.4f, IoU %.3f, %.1f samples/s; latest checkpoint %s",
                          result.final_step, result.final_loss, result.final_iou, result.samples_per_s,
                          result.latest_checkpoint)
    return result


@flow(name="train")
def train(data: list[str], run_dir: str = "flip-runs/default/train", params: TrainParams = TrainParams(),
          ray_address: str | None = None) -> str:
    """Train on the converted datasets ``data`` (directories or manifests) and publish ``training-summary``.

    Returns:
        The latest FLIP checkpoint (``RUN_DIR/checkpoints/latest.ckpt``).
    """
    from flip_core.train.metrics import read_metrics

    missing = [d for d in data if not Path(d).exists()]
    if missing:
        raise FileNotFoundError(f"training data not found: {missing} (convert it first: flow `convert`)")
    with ray_runtime(ray_address) as where:
        get_run_logger().info("Ray: %s", where)
        result = train_task(data, run_dir, params, None)  # None: use the flow's Ray connection
    checkpoints = {"latest": result.latest_checkpoint, "best": result.best_checkpoint}
    records = read_metrics(Path(result.metrics_path))
    publish("training-summary", training_markdown(records, checkpoints, Path(run_dir),
                                                  keys=("loss", "iou", "samples_per_s")),
            f"FLIP-{params.model}: loss / IoU curve and checkpoints")
    if not result.latest_checkpoint:
        raise RuntimeError(f"training finished without a checkpoint in {run_dir}")
    return result.latest_checkpoint
