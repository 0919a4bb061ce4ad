"""``convert_dataset``: enumerate on the driver, one Ray task per shard, then manifest, rejects and index.

Order of writes (each atomic): ``shard-NNNNN.h5`` + ``_state/shard-NNNNN.json`` per task as it finishes, then on
the driver ``manifest.parquet``, ``rejects.parquet`` and last ``index.json``. ``index.json`` is removed when a run
starts, so a directory with an ``index.json`` is always a finished, consistent conversion. A rerun redoes exactly
the shards whose completion record is missing, belongs to other settings or data, or whose file's sha256 changed;
the output is byte-identical to a clean run.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import ray

from datasets_spec.base import DatasetSpec
from flip_core.convert.plan import ShardPlan, plan_shards
from flip_core.convert.task import STATE_DIR, ShardResult, ShardSettings, convert_shard
from flip_core.env import apply_local_defaults
from flip_core.images import DEFAULT_MAX_PIXELS
from flip_core.manifest import (
    INDEX_NAME,
    INDEX_SCHEMA_VERSION,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    REJECTS_NAME,
    rejects_table,
    write_json_atomic,
    write_parquet,
)
from flip_core.shards import SHARD_FORMAT_VERSION, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["ConversionSummary", "convert_dataset", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversionSummary:
    """What a conversion produced (also what ``flip convert`` prints)."""

    dataset: str
    out_dir: Path
    images: int
    """Images written to shards."""
    instances: int
    """Instances written to shards."""
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    """Reject rows per reason (crowd, missing_file, ...)."""
    shards: int = 0
    skipped_shards: int = 0
    """Shards found complete and intact, not rewritten."""
    wall_s: float = 0.0
    """Wall time of the whole call, including Ray start-up when it started Ray."""

    @property
    def rejects(self) -> int:
        return sum(self.rejects_by_reason.values())

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "out_dir": str(self.out_dir), "images": self.images,
            "instances": self.instances, "rejects": self.rejects, "rejects_by_reason": dict(self.rejects_by_reason),
            "shards": self.shards, "skipped_shards": self.skipped_shards, "wall_s": self.wall_s,
            "images_per_s": self.images_per_s, "instances_per_s": self.instances_per_s,
        }

    def to_markdown(self) -> str:
        lines = [
            f"### Conversion of `{self.dataset}` -> `{self.out_dir}`",
            "",
            "| metric | value |",
            "|---|---|",
            f"| images | {self.images} |",
            f"| instances | {self.instances} |",
            f"| shards (skipped as already done) | {self.shards} ({self.skipped_shards}) |",
            f"| rejects | {self.rejects} |",
        ]
        lines += [f"| rejects: {reason} | {n} |" for reason, n in sorted(self.rejects_by_reason.items())]
        lines += [f"| wall time | {self.wall_s:.2f} s |", f"| images/s | {self.images_per_s:.1f} |",
                  f"| instances/s | {self.instances_per_s:.1f} |"]
        return "\n".join(lines)


def _clear_outputs(out_dir: Path, *, everything: bool, keep: int) -> None:
    """Remove ``index.json`` (always), shards numbered ``>= keep`` and, with ``everything``, all our outputs."""
    (out_dir / INDEX_NAME).unlink(missing_ok=True)
    for path in sorted(out_dir.glob("shard-*.h5*")):
        number = path.name.split(".")[0].removeprefix("shard-")
        if everything or ".tmp-" in path.name or (number.isdigit() and int(number) >= keep):
            logger.info("removing %s", path)
            path.unlink()
    state = out_dir / STATE_DIR
    if everything:
        shutil.rmtree(state, ignore_errors=True)
        for name in (MANIFEST_NAME, REJECTS_NAME):
            (out_dir / name).unlink(missing_ok=True)
    elif state.is_dir():
        for path in state.glob("shard-*.json"):
            number = path.stem.removeprefix("shard-")
            if number.isdigit() and int(number) >= keep:
                path.unlink()


def _remove_stale_temps(out_dir: Path) -> None:
    """Delete temp files left by writers that were killed (a retried task leaves its predecessor's ``.tmp-PID``)."""
    for path in [*out_dir.glob("shard-*.h5.tmp-*"), *(out_dir / STATE_DIR).glob("*.json.tmp-*")]:
        logger.info("removing stale temporary file %s", path)
        path.unlink(missing_ok=True)


def _run_tasks(spec: DatasetSpec, plans: list[ShardPlan], settings: ShardSettings, num_workers: int,
               progress: bool) -> list[ShardResult]:
    """Submit one task per shard, at most ``num_workers`` in flight; results in plan order."""
    from tqdm import tqdm

    task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(convert_shard)
    spec_ref = ray.put(spec)
    pending = list(reversed(plans))
    running: dict = {}
    results: dict[int, ShardResult] = {}
    total_images = sum(len(p.samples) for p in plans)
    with tqdm(total=total_images, unit="img", desc=f"convert {settings.dataset_name}", disable=not progress) as bar:
        while pending or running:
            while pending and len(running) < num_workers:
                plan = pending.pop()
                running[task.remote(spec_ref, plan, settings)] = plan
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                plan = running.pop(ref)
                result = ray.get(ref)
                results[plan.index] = result
                bar.update(len(plan.samples))
                bar.set_postfix(shards=f"{len(results)}/{len(plans)}", skipped=sum(r.skipped for r in results.values()))
    return [results[p.index] for p in plans]


def _write_tables(out_dir: Path, spec: DatasetSpec, results: list[ShardResult], enum_rejects: list[dict],
                  settings: ShardSettings, shard_size: int) -> tuple[dict, Counter]:
    manifest = pa.concat_tables([r.manifest for r in results]) if results else MANIFEST_SCHEMA.empty_table()
    reject_rows = enum_rejects + [row for r in results for row in r.rejects]
    write_parquet(manifest, out_dir / MANIFEST_NAME)
    write_parquet(rejects_table(reject_rows), out_dir / REJECTS_NAME)
    by_reason = Counter(row["reason"] for row in reject_rows)
    index = {
        "schema_version": INDEX_SCHEMA_VERSION,
        "format": "flip-hdf5-shards",
        "shard_format_version": SHARD_FORMAT_VERSION,
        "dataset": settings.dataset_name,
        "type": settings.dataset_type,
        "shard_size": shard_size,
        "num_images": sum(r.images for r in results),
        "num_instances": sum(r.instances for r in results),
        "num_rejects": len(reject_rows),
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "manifest": MANIFEST_NAME,
        "manifest_sha256": sha256_file(out_dir / MANIFEST_NAME),
        "rejects": REJECTS_NAME,
        "rejects_sha256": sha256_file(out_dir / REJECTS_NAME),
        "shards": [
            {"file": r.file_name, "sha256": r.sha256, "images": r.images, "instances": r.instances,
             "first_key": r.first_key, "last_key": r.last_key}
            for r in results
        ],
    }
    write_json_atomic(index, out_dir / INDEX_NAME)
    return index, by_reason


def convert_dataset(
    spec: DatasetSpec,
    out_dir: str | Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 2,
    ray_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ConversionSummary:
    """Convert ``spec``'s dataset into FLIP shards under ``out_dir`` (resumable; see the module docstring).

    Args:
        spec: a ``datasets_spec`` spec object (picklable; sent to every task).
        out_dir: output directory (created). Files written: ``shard-NNNNN.h5``, ``manifest.parquet``,
            ``rejects.parquet``, ``index.json``, ``_state/``.
        shard_size: images per shard.
        num_workers: shard tasks in flight at once (each takes 1 CPU). When this call starts a local Ray, it gets
            ``num_cpus=num_workers``.
        ray_address: connect to this Ray cluster (``"auto"``, ``"host:port"``); None starts a local one unless Ray
            is already initialised in this process, which is then used as it is (and left running).
        overwrite: delete previous outputs in ``out_dir`` first instead of resuming.
        progress: show a tqdm progress bar (images) on the driver.
        max_pixels: decompression-bomb limit; larger images are rejected (``decompression_bomb``).

    Returns:
        A :class:`ConversionSummary`.

    Raises:
        SpecError: the annotations are malformed (before anything is written).
        ValueError: bad ``shard_size`` / ``num_workers``.
        ray.exceptions.RayTaskError: a shard task failed for a non-data reason (e.g. disk full) after 3 retries.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    samples = list(spec.samples())  # SpecError surfaces here, before anything is written
    enum_rejects = [{**_as_row(r), "shard": ""} for r in spec.enumeration_rejects()]
    file_metadata = {k: str(v) for k, v in spec.file_metadata().items()}
    dataset_type = file_metadata.pop("type", getattr(spec, "dataset_type", spec.name))
    settings = ShardSettings(out_dir=str(out_dir), dataset_name=spec.name, dataset_type=dataset_type,
                             file_metadata=file_metadata, max_pixels=max_pixels)
    plans = plan_shards(samples, shard_size=shard_size, settings={
        "dataset_name": spec.name, "dataset_type": dataset_type, "file_metadata": file_metadata,
        "max_pixels": max_pixels})
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out_dir, everything=overwrite, keep=len(plans))
    logger.info("%s: %d images in %d shards of <= %d -> %s", spec.name, len(samples), len(plans), shard_size, out_dir)
    started_ray = _ensure_ray(ray_address, num_workers)
    try:
        results = _run_tasks(spec, plans, settings, num_workers, progress)
    finally:
        if started_ray:
            ray.shutdown()
    _remove_stale_temps(out_dir)
    index, by_reason = _write_tables(out_dir, spec, results, enum_rejects, settings, shard_size)
    summary = ConversionSummary(
        dataset=spec.name, out_dir=out_dir, images=index["num_images"], instances=index["num_instances"],
        rejects_by_reason=dict(sorted(by_reason.items())), shards=len(plans),
        skipped_shards=sum(r.skipped for r in results), wall_s=time.perf_counter() - start,
    )
    logger.info("%s: %d images, %d instances, %d rejects, %d shards (%d skipped) in %.1f s", spec.name,
                summary.images, summary.instances, summary.rejects, summary.shards, summary.skipped_shards,
                summary.wall_s)
    return summary


def _as_row(reject) -> dict:
    return {"source_id": reject.source_id, "stage": reject.stage, "reason": reject.reason, "message": reject.message}


def _ensure_ray(ray_address: str | None, num_workers: int) -> bool:
    """Initialise Ray unless it already is; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        if ray_address is not None:
            logger.warning("Ray is already initialised in this process; ignoring ray_address=%r", ray_address)
        return False
    apply_local_defaults()
    if ray_address is None:
        ray.init(address="local", num_cpus=num_workers, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(address=ray_address, log_to_driver=True)
    return True
