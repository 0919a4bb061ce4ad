"""The per-worker training loop run by Ray Train (``train_loop_per_worker``).

Everything comes through ``train_loop_config = {"train": TrainConfig.to_dict()}``; no module globals. Each worker:
builds FLIP with the run seed (identical on every rank), the DeepSpeed engine (:mod:`flip_core.train.engine`),
restores the latest checkpoint Ray hands it (``ray.train.get_checkpoint()``: a ``--resume`` or a FailureConfig
restart), builds its loader at rank-local image position ``step x images_per_batch x accumulation`` (the sampler
position of that step) and trains to ``config.steps``.

Checkpoints every ``checkpoint_every`` steps and at the end: each rank writes ``engine.save_checkpoint`` (tag
``ds``, client state: step, dynamic-sampling state, best loss) into a local temporary directory and reports it via
``ray.train.report(..., checkpoint_dir_name="step-XXXXXXX")``; Ray merges the ranks' files into
``RUN_DIR/ray/step-XXXXXXX`` and keeps the last ``keep_checkpoints``. Rank 0 also writes the FLIP checkpoints
``RUN_DIR/checkpoints/step-XXXXXXX.ckpt`` (last ``keep_checkpoints`` kept), ``latest.ckpt`` and ``best.ckpt``
(lowest mean loss over a checkpoint interval) with ``save_flip_checkpoint``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch

from flip_core.data.collate import to_flip_batch
from flip_core.data.dataset import mask_pool_layout
from flip_core.logging_utils import init_logging
from flip_core.train.config import TrainConfig
from flip_core.train.dynamic import MaskGroupSampling, group_ious
from flip_core.train.engine import build_engine, load_deepspeed_config
from flip_core.train.metrics import MetricsWriter, format_progress

__all__ = ["train_worker", "StepRunner", "FAILURE_MARKER"]

logger = logging.getLogger(__name__)

CKPT_TAG = "ds"
FAILURE_MARKER = ".injected-failure-done"


class StepRunner:
    """One optimizer step (``gradient_accumulation_steps`` micro-batches) on a DeepSpeed engine."""

    def __init__(self, engine, loader, dynamic: MaskGroupSampling, pool_layout: tuple[int, ...], accumulation: int):
        self.engine, self.loader, self.dynamic = engine, loader, dynamic
        self.pool_layout, self.accumulation = pool_layout, accumulation

    def _autocast(self):
        """bf16 autocast when the engine runs bf16 (GPU): the model feeds fp32 patch values into bf16 weights."""
        if self.engine.bfloat16_enabled():
            return torch.autocast(device_type=self.engine.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> dict:
        """Train one step; returns this rank's raw sums (loss, IoU, group IoUs, samples, tokens, redraws)."""
        from flip_core.model import mask_loss, sampled_point_iou

        sums = {"loss": 0.0, "iou": 0.0, "samples": 0, "tokens": 0, "group_iou": [0.0] * 7, "redraws": {}}
        counts_used = self.dynamic.counts
        for _ in range(self.accumulation):
            collated = next(self.loader)
            counts_used = self.dynamic.counts
            batch = to_flip_batch(collated, self.pool_layout, counts_used).to(self.engine.device)
            with self._autocast():
                logits = self.engine(batch)
            loss = mask_loss(logits.float(), batch.targets)
            self.engine.backward(loss)
            self.engine.step()
            ious = group_ious(logits, batch.targets, counts_used)
            self.dynamic.update(ious)
            sums["loss"] += float(loss.detach()) / self.accumulation
            sums["iou"] += float(sampled_point_iou(logits.float(), batch.targets, batch.query_counts).mean())
            sums["group_iou"] = [a + b / self.accumulation for a, b in zip(sums["group_iou"], ious)]
            sums["samples"] += batch.num_samples
            sums["tokens"] += int(batch.patch_counts.sum())
            for k, v in collated.counts.items():
                sums["redraws"][k] = sums["redraws"].get(k, 0) + v
        sums["iou"] /= self.accumulation
        sums["samples_per_group"] = list(counts_used)
        return sums


def _all_reduce_mean(values: list[float], world_size: int) -> list[float]:
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / world_size).tolist()


def _step_record(step: int, sums: dict, wall: float, lr: float, world_size: int) -> dict:
    """Rank-mean loss/IoUs, global samples and tokens per second (sums over ranks)."""
    vals = [sums["loss"], sums["iou"], *sums["group_iou"], sums["samples"], sums["tokens"]]
    mean = _all_reduce_mean(vals, world_size)
    samples, tokens = mean[-2] * world_size, mean[-1] * world_size
    return {"step": step, "loss": mean[0], "iou": mean[1], "group_iou": mean[2:9],
            "samples_per_group": sums["samples_per_group"], "samples": int(round(samples)),
            "tokens": int(round(tokens)), "samples_per_s": samples / wall, "tokens_per_s": tokens / wall,
            "lr": lr, "step_s": wall, "redraws_rank0": sums["redraws"]}


class _Checkpointer:
    """DeepSpeed checkpoints through ``ray.train.report`` plus rank-0 FLIP checkpoints (module docstring)."""

    def __init__(self, cfg: TrainConfig, engine, rank: int, best_loss: float) -> None:
        self.cfg, self.engine, self.rank = cfg, engine, rank
        self.best_loss = best_loss
        self.window: list[float] = []
        self.flip_dir = Path(cfg.run_dir) / "checkpoints"

    def save(self, step: int, dynamic: MaskGroupSampling, metrics: dict) -> None:
        import ray.train

        window_loss = sum(self.window) / max(len(self.window), 1)
        self.window = []
        is_best = window_loss < self.best_loss
        if is_best:
            self.best_loss = window_loss
        if self.rank == 0:
            self._save_flip(step, is_best, window_loss)
        client = {"step": step, "dynamic": dynamic.state_dict(), "best_loss": self.best_loss}
        with tempfile.TemporaryDirectory(prefix="flip-ckpt-") as tmp:
            self.engine.save_checkpoint(tmp, tag=CKPT_TAG, client_state=client)
            ray.train.report({**metrics, "checkpoint_loss": window_loss},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step-{step:07d}")

    def _save_flip(self, step: int, is_best: bool, window_loss: float) -> None:
        from flip_core.model import save_flip_checkpoint

        meta = {"step": step, "run_dir": str(self.cfg.run_dir), "model": self.cfg.model, "seed": self.cfg.seed,
                "window_loss": window_loss}
        path = save_flip_checkpoint(self.engine.module, self.flip_dir / f"step-{step:07d}.ckpt", meta)
        shutil.copyfile(path, self.flip_dir / "latest.ckpt")
        if is_best:
            shutil.copyfile(path, self.flip_dir / "best.ckpt")
        for old in sorted(self.flip_dir.glob("step-*.ckpt"))[: -self.cfg.keep_checkpoints]:
            old.unlink()


def _restore(engine, resume_from: str | None) -> tuple[int, dict | None]:
    """Load the checkpoint Ray hands this worker (a restart after a failure, or Ray's own restore of the run's
    storage), else ``resume_from`` (``--resume``: the driver's newest ``RUN_DIR/ray/step-*``).

    Returns:
        (step, client state), or (0, None) when starting fresh.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = ray.train.Checkpoint(resume_from)
    if checkpoint is None:
        return 0, None
    with checkpoint.as_directory() as directory:
        path, client = engine.load_checkpoint(directory, tag=CKPT_TAG)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {checkpoint.path}")
    return int(client["step"]), client


def _maybe_inject_failure(cfg: TrainConfig, step: int, rank: int) -> None:
    marker = Path(cfg.run_dir) / FAILURE_MARKER
    if cfg.fail_at_step == step and rank == 0 and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure after step {step} (TrainConfig.fail_at_step)")


def train_worker(loop_config: dict) -> None:
    """Ray Train worker entry point (see module docstring)."""
    import ray.train

    from flip_core.model import build_flip_model
    from flip_core.train.data_setup import build_loader, open_training_data

    init_logging()
    cfg = TrainConfig.from_dict(loop_config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.cpus_per_worker)
    model = build_flip_model(cfg.model, seed=cfg.seed)
    engine = build_engine(model, cfg, load_deepspeed_config(cfg.deepspeed_config))
    dynamic = MaskGroupSampling(cfg.data)
    start, client = _restore(engine, loop_config.get("resume_from"))
    if client is not None:
        dynamic.load_state_dict(client["dynamic"])
    images_per_step = cfg.data.images_per_batch * cfg.gradient_accumulation_steps
    loader = build_loader(open_training_data(cfg.data, verify=False), cfg.data, patch_sizes=model.config.patch_sizes,
                          seed=cfg.seed, rank=rank, world_size=world, start_position=start * images_per_step)
    runner = StepRunner(engine, loader, dynamic, mask_pool_layout(cfg.data), cfg.gradient_accumulation_steps)
    ckpt = _Checkpointer(cfg, engine, rank, client["best_loss"] if client else float("inf"))
    writer = MetricsWriter(cfg.run_dir, start) if rank == 0 else None
    if rank == 0:
        logger.info("training %s from step %d to %d on %d rank(s)", cfg.model, start, cfg.steps, world)
    try:
        _run(cfg, engine, runner, ckpt, writer, start, rank, world)
    finally:
        if writer is not None:
            writer.close()
        del loader, runner


def _run(cfg, engine, runner, ckpt, writer, start, rank, world) -> None:
    import ray.train

    for step in range(start + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        sums = runner.step()
        rec = _step_record(step, sums, time.perf_counter() - t0, float(engine.get_lr()[0]), world)
        ckpt.window.append(rec["loss"])
        if writer is not None:
            writer.write(rec)
            if step % cfg.log_every == 0 or step == cfg.steps:
                logger.info(format_progress(rec, cfg.steps))
        report = {k: rec[k] for k in ("step", "loss", "iou", "samples_per_s", "tokens_per_s", "lr")}
        report.update({f"group{g}_iou": v for g, v in enumerate(rec["group_iou"])})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            ckpt.save(step, runner.dynamic, report)
        elif step % cfg.log_every == 0:
            ray.train.report(report)
        _maybe_inject_failure(cfg, step, rank)
