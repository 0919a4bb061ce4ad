"""Worker side of the fan-out: one task evaluates one method (checkpoint or baseline) on one shard.

A task writes one Parquet file per (protocol, mode) it was asked for ("job"), each atomically (temporary name in the
same directory, fsync, ``os.replace``), with the JSON of its inputs and their sha256 in the Parquet schema metadata
(keys ``flip_eval.inputs`` and ``flip_eval.inputs_sha256``). The planner (:mod:`flip_core.eval.fanout`) skips a job
whose file exists with the same inputs hash, so a killed or repeated run only redoes what is missing or stale.

Per-instance generator: ``np.random.default_rng(SeedSequence([seed, h(dataset), h(shard), instance_row, h(protocol)]))``
with ``h`` a stable 32-bit hash, so results do not depend on worker count or task order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flip_core.eval.adapter import ClickAdapterConfig, ClickPromptAdapter
from flip_core.eval.baseline import instance_fold
from flip_core.eval.config import TaskOutcome
from flip_core.eval.metrics import size_bucket
from flip_core.eval.predictors import EllipsePredictor, FlipPredictor
from flip_core.eval.protocols import click_protocol_instance, flip_protocol_instance

logger = logging.getLogger(__name__)

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "BASELINE_METHOD",
    "ResultJob",
    "EvalTask",
    "canonical_json",
    "inputs_sha256",
    "result_is_current",
    "write_table_atomic",
    "instance_rng",
    "run_task",
]

RESULT_SCHEMA_VERSION = 1
BASELINE_METHOD = "ellipse"
_META_INPUTS = b"flip_eval.inputs"
_META_SHA = b"flip_eval.inputs_sha256"


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultJob:
    """One result file: a protocol in one mode (``ellipse`` for the baseline)."""

    protocol: str
    mode: str
    path: str
    inputs: str
    """Canonical JSON of every input that determines the file's content."""

    @property
    def sha256(self) -> str:
        return inputs_sha256(self.inputs)


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalTask:
    """One (method, shard) unit of work. Everything the worker needs travels inside it (no globals)."""

    method: str
    """Checkpoint tag (``<stem>-<sha256[:8]>``) or :data:`BASELINE_METHOD`."""
    checkpoint: str | None
    """Checkpoint path; None for the baseline."""
    dataset_path: str
    """What ``open_dataset`` accepts."""
    dataset: str
    shard_index: int
    shard: str
    """Shard file name (relative to the dataset root)."""
    instance_rows: tuple[int, ...]
    source_ids: tuple[str, ...]
    jobs: tuple[ResultJob, ...]
    settings: dict
    """Protocol settings: seed, num_tokens, overlap_threshold, coverage, convention, max_clicks, target_iou,
    adapter (dict), torch_threads, baseline_radii ([r for fold 0, r for fold 1] or None)."""


def canonical_json(obj) -> str:
    """Stable JSON used for input hashing (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def inputs_sha256(inputs_json: str) -> str:
    return hashlib.sha256(inputs_json.encode()).hexdigest()


def result_is_current(path: str | os.PathLike, expected_sha: str) -> tuple[bool, str]:
    """Whether ``path`` holds a complete result for the expected inputs.

    Returns:
        ``(current, why)``; ``why`` is "" when current, else "missing", "settings changed" or "unreadable: ...".
    """
    p = Path(path)
    if not p.exists():
        return False, "missing"
    try:
        meta = pq.read_schema(p).metadata or {}
    except Exception as exc:  # a foreign or damaged file: recompute, never trust it
        return False, f"unreadable: {exc}"
    if meta.get(_META_SHA, b"").decode() != expected_sha:
        return False, "settings changed"
    return True, ""


def write_table_atomic(table: pa.Table, path: str | os.PathLike, inputs_json: str) -> None:
    """Write ``table`` to ``path`` with the inputs in its metadata: temp file, fsync, rename (never a half file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta[_META_INPUTS] = inputs_json.encode()
    meta[_META_SHA] = inputs_sha256(inputs_json).encode()
    table = table.replace_schema_metadata(meta)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _h(text: str) -> int:
    return zlib.crc32(text.encode())


def instance_rng(seed: int, dataset: str, shard: str, instance_row: int, protocol: str) -> np.random.Generator:
    """The per-instance generator (module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _h(dataset), _h(shard), instance_row, _h(protocol)]))


def _predictors(task: EvalTask):
    """``mode -> callable(instance_row) -> Predictor`` for the task's method."""
    s = task.settings
    if task.checkpoint is None:
        radii = s["baseline_radii"]
        by_fold = {f: EllipsePredictor(radius=float(radii[f])) for f in (0, 1)}

        def pick(row: int):
            return by_fold[instance_fold(f"{task.dataset}/{task.shard}/{row}", s["seed"])]

        return {"ellipse": pick}
    import torch

    from flip_core.model import load_flip_checkpoint

    torch.set_num_threads(int(s["torch_threads"]))
    model = load_flip_checkpoint(task.checkpoint, map_location="cpu")
    model.eval()
    out = {}
    for mode in {j.mode for j in task.jobs}:
        pred = FlipPredictor(
            model=model,
            mode=mode,
            num_tokens=s["num_tokens"],
            overlap_threshold=s["overlap_threshold"],
            coverage=s["coverage"],
            convention=s["convention"],
        )
        out[mode] = lambda row, pred=pred: pred
    return out


class _ImageCache:
    """Decodes each image once while a task walks its (image-ordered) instances."""

    def __init__(self, reader):
        self.reader = reader
        self.index = -1
        self.image = None

    def get(self, i: int) -> np.ndarray:
        if i != self.index:
            self.image, self.index = self.reader.image(i), i
        return self.image


def _instance_row(task: EvalTask, reader, cache: _ImageCache, j: int, source_id: str, job: ResultJob, pick) -> dict:
    i = reader.image_of(j)
    h, w = reader.image_size(i)
    gt = np.asarray(reader.mask(j), dtype=bool)
    ignore = reader.ignore_mask(j)
    base = {
        "method": task.method,
        "mode": job.mode,
        "protocol": job.protocol,
        "dataset": task.dataset,
        "shard": task.shard,
        "instance_row": int(j),
        "image_row": int(i),
        "image_id": int(reader.image_id(i)),
        "source_id": source_id,
        "width": int(w),
        "height": int(h),
        "area_px": int(gt.sum()),
        "rel_area": float(gt.sum()) / float(h * w),
        "ignore_px": 0 if ignore is None else int(np.asarray(ignore, dtype=bool).sum()),
        "fold": instance_fold(f"{task.dataset}/{task.shard}/{j}", task.settings["seed"]),
        "status": "ok",
    }
    base["size_bucket"] = str(size_bucket(base["rel_area"]))
    if not gt.any():
        base["status"] = "skipped: empty ground-truth mask"
        return base
    image = cache.get(i)
    rng = instance_rng(task.settings["seed"], task.dataset, task.shard, j, job.protocol)
    predictor = pick(j)
    if job.protocol == "flip":
        base.update(flip_protocol_instance(predictor, image, gt, ignore, reader.moments(j), rng))
    else:
        s = task.settings
        adapter = ClickPromptAdapter(predictor, ClickAdapterConfig(**s["adapter"]))
        base.update(
            click_protocol_instance(
                adapter, image, gt, ignore, rng, max_clicks=s["max_clicks"], target_iou=s["target_iou"]
            )
        )
    return base


def _rows_to_table(rows: list[dict]) -> pa.Table:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    cols = {k: [r.get(k) for r in rows] for k in keys}
    return pa.table(cols)


def run_task(task: EvalTask) -> TaskOutcome:
    """Evaluate ``task`` and write its result files. Runs in a Ray worker or in-process.

    Raises:
        RuntimeError: naming the method, shard and instance when anything fails (no result file is written for the
            job that failed; files of jobs that finished before stay, and are current).
    """
    from flip_core.manifest import open_dataset

    t0 = time.perf_counter()
    written = []
    try:
        predictors = _predictors(task)
    except Exception as exc:
        raise RuntimeError(f"{task.method}: checkpoint {task.checkpoint} does not load: {exc}") from exc
    ds = open_dataset(task.dataset_path)
    reader = ds.reader(task.shard_index)
    with reader:
        cache = _ImageCache(reader)
        for job in task.jobs:
            rows = []
            for j, sid in zip(task.instance_rows, task.source_ids):
                try:
                    rows.append(_instance_row(task, reader, cache, j, sid, job, predictors[job.mode]))
                except Exception as exc:
                    raise RuntimeError(
                        f"{task.method} {job.protocol}/{job.mode} failed on {task.dataset} shard {task.shard} "
                        f"instance {j} ({sid}): {type(exc).__name__}: {exc}"
                    ) from exc
            write_table_atomic(_rows_to_table(rows), job.path, job.inputs)
            written.append(job.path)
            logger.info("%s %s/%s %s %s: %d instances -> %s", task.method, job.protocol, job.mode, task.dataset,
                        task.shard, len(rows), job.path)
    return TaskOutcome(
        method=task.method,
        dataset=task.dataset,
        shard=task.shard,
        files=tuple(written),
        instances=len(task.instance_rows),
        wall_s=time.perf_counter() - t0,
    )
