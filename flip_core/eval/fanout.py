"""Driver side of the fan-out: find datasets, check inputs, calibrate the baseline, plan and run the tasks.

Plan: one task per (method, shard), where a method is a checkpoint (all requested modes and protocols) or the
ellipse baseline. A task carries one job per result file
``OUT/results/<method>/<dataset>/<shard stem>/<protocol>__<mode>.parquet``. A job is skipped when its file exists
and its recorded inputs hash matches (:func:`flip_core.eval.tasks.result_is_current`); the inputs are the schema
version, method, checkpoint sha256 (or the baseline radii), dataset name, shard file name and sha256, the evaluated
instance rows, the protocol, the mode and every protocol setting. A changed setting therefore recomputes that file
(overwriting it atomically), and results made with different settings are never mixed. A task with no job left is
not submitted at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flip_core.eval.baseline import DEFAULT_RADII, choose_radius, instance_fold
from flip_core.eval.config import EvalConfig, TaskOutcome
from flip_core.eval.tasks import (
    BASELINE_METHOD,
    RESULT_SCHEMA_VERSION,
    EvalTask,
    ResultJob,
    canonical_json,
    result_is_current,
    run_task,
)
from flip_core.shards import sha256_file

logger = logging.getLogger(__name__)

__all__ = ["Benchmark", "find_datasets", "checkpoint_tag", "calibrate_baseline", "plan_tasks", "execute_tasks"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Benchmark:
    """One converted dataset selected for evaluation."""

    name: str
    path: str
    shards: tuple[str, ...]
    """Shard file names, in index order."""
    shard_sha256: tuple[str, ...]
    rows: dict
    """``shard index -> (instance_rows tuple, source_ids tuple)`` of the instances to evaluate."""
    num_instances: int
    """Instances in the whole dataset (before ``max_instances``)."""


def _looks_converted(p: Path) -> bool:
    return p.is_file() or (p / "index.json").exists() or (p / "manifest.parquet").exists()


def _expand(paths: tuple[str, ...]) -> list[Path]:
    out = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"--data {raw}: no such file or directory")
        if _looks_converted(p):
            out.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and _looks_converted(d))
        if not subs:
            raise ValueError(f"--data {raw}: neither a converted dataset (index.json / manifest.parquet) nor a "
                             "directory of converted datasets")
        out.extend(subs)
    return out


def _shard_sha(ds, k: int, shard: Path) -> str:
    for entry in (ds.index or {}).get("shards", []):
        name = entry.get("file") or entry.get("name") or entry.get("shard") or ""
        if name and Path(name).name == shard.name and entry.get("sha256"):
            return str(entry["sha256"])
    logger.info("index has no sha256 for %s; hashing the file", shard)
    return sha256_file(shard)


def _select_rows(ds, name: str, seed: int, max_instances: int | None, shard_names: list[str]) -> dict:
    table = ds.manifest
    shards = [str(s) for s in table.column("shard").to_pylist()]
    rows = np.asarray(table.column("instance_row").to_pylist(), dtype=np.int64)
    sids = [str(s) for s in table.column("source_id").to_pylist()] if "source_id" in table.column_names else [
        ""] * len(rows)
    order = np.arange(len(rows))
    if max_instances is not None and max_instances < len(rows):
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")])
        order = np.sort(rng.choice(len(rows), size=max_instances, replace=False))
    index_of = {Path(s).name: k for k, s in enumerate(shard_names)}
    out: dict[int, tuple[list, list]] = {}
    for n in order:
        key = Path(shards[n]).name
        if key not in index_of:
            raise ValueError(f"{ds.root}: manifest row {n} names shard {shards[n]!r}, which is not in the index")
        r, s = out.setdefault(index_of[key], ([], []))
        r.append(int(rows[n]))
        s.append(sids[n])
    return {k: (tuple(v[0]), tuple(v[1])) for k, v in sorted(out.items())}


def find_datasets(config: EvalConfig) -> list[Benchmark]:
    """Open and check every dataset of ``config.data``.

    Raises:
        ValueError: empty dataset, a shard without ground-truth masks, duplicate dataset names, bad paths.
    """
    from flip_core.manifest import open_dataset

    out: list[Benchmark] = []
    for path in _expand(config.data):
        path = path.resolve()  # workers may run in another working directory
        ds = open_dataset(path)
        name = ds.name
        if ds.manifest.num_rows == 0:
            raise ValueError(f"{path}: dataset {name!r} has no instances (empty benchmark)")
        shards = [Path(s) for s in ds.shards]
        for k, shard in enumerate(shards):
            if not shard.exists():
                raise FileNotFoundError(f"{path}: shard {shard} listed in the index is missing")
            with ds.reader(k) as reader:
                if not reader.has_masks:
                    raise ValueError(f"{shard}: shard has no ground-truth masks; it cannot be evaluated")
        if any(b.name == name for b in out):
            raise ValueError(f"two --data entries are both named {name!r} ({path}); evaluate them separately")
        rows = _select_rows(ds, name, config.seed, config.max_instances, [s.name for s in shards])
        out.append(
            Benchmark(
                name=name,
                path=str(path),
                shards=tuple(s.name for s in shards),
                shard_sha256=tuple(_shard_sha(ds, k, s) for k, s in enumerate(shards)),
                rows=rows,
                num_instances=ds.manifest.num_rows,
            )
        )
    return out


def checkpoint_tag(path: str) -> tuple[str, str]:
    """``(tag, sha256)`` of a checkpoint file; the tag is ``<stem>-<sha256[:8]>``.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    sha = sha256_file(p)
    return f"{p.stem}-{sha[:8]}", sha


def check_checkpoint_loads(path: str) -> None:
    """Load ``path`` once in the driver so a broken checkpoint fails before any task starts."""
    from flip_core.model import load_flip_checkpoint

    try:
        load_flip_checkpoint(path, map_location="cpu")
    except Exception as exc:
        raise ValueError(f"checkpoint {path} does not load: {type(exc).__name__}: {exc}") from exc


def _calibration_samples(bench: Benchmark, fold: int, seed: int, limit: int):
    """Seeded subsample (at most ``limit``) of the benchmark's instances in ``fold``, over the whole dataset."""
    from flip_core.manifest import open_dataset

    ds = open_dataset(bench.path)
    table = ds.manifest
    shard_of = {s: k for k, s in enumerate(bench.shards)}
    keys = [(shard_of[Path(s).name], int(r)) for s, r in zip(table.column("shard").to_pylist(),
                                                              table.column("instance_row").to_pylist())]
    members = [kr for kr in keys if instance_fold(f"{bench.name}/{bench.shards[kr[0]]}/{kr[1]}", seed) == fold]
    rng = np.random.default_rng([seed, fold, 7])
    if len(members) > limit:
        members = [members[n] for n in np.sort(rng.choice(len(members), size=limit, replace=False))]
    readers = {}
    try:
        for k, j in members:
            reader = readers.setdefault(k, ds.reader(k))
            gt = np.asarray(reader.mask(j), dtype=bool)
            if gt.any():
                yield reader.moments(j), gt, reader.ignore_mask(j)
    finally:
        for r in readers.values():
            r.close()


def calibrate_baseline(bench: Benchmark, config: EvalConfig) -> list:
    """Radii for the baseline by cross-fitting (``flip_core.eval.baseline``), cached in ``OUT/calibration/``.

    Returns:
        ``[r_fold0, r_fold1, n_fold0, n_fold1]`` where ``r_f`` was chosen on fold ``f`` and is used on fold ``1-f``.
    """
    key = canonical_json({
        "dataset": bench.name, "shard_sha256": bench.shard_sha256, "seed": config.seed,
        "limit": config.calibration_instances, "radii": DEFAULT_RADII, "schema": RESULT_SCHEMA_VERSION,
    })
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = config.out_path / "calibration" / f"{bench.name}-{digest}.json"
    if cache.exists():
        return json.loads(cache.read_text())["radii"]
    chosen = []
    for fold in (0, 1):
        r, curve, n = choose_radius(_calibration_samples(bench, fold, config.seed, config.calibration_instances))
        chosen.append((r, n, curve))
        logger.info("baseline %s: fold %d (%d instances) -> r = %.2f", bench.name, fold, n, r)
    result = [chosen[0][0], chosen[1][0], chosen[0][1], chosen[1][1]]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    payload = {"radii": result, "grid": list(DEFAULT_RADII),
               "mean_iou_fold0": [None if np.isnan(v) else float(v) for v in chosen[0][2]],
               "mean_iou_fold1": [None if np.isnan(v) else float(v) for v in chosen[1][2]], "inputs": key}
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(cache)
    return result


def _settings(config: EvalConfig, radii) -> dict:
    return {
        "seed": config.seed,
        "num_tokens": config.num_tokens,
        "overlap_threshold": config.overlap_threshold,
        "coverage": config.coverage,
        "convention": config.convention,
        "max_clicks": config.max_clicks,
        "target_iou": config.target_iou,
        "adapter": config.adapter.to_dict(),
        "torch_threads": config.torch_threads,
        # the fold -> radius actually used: fold f is evaluated with the radius chosen on fold 1 - f
        "baseline_radii": None if radii is None else [radii[1], radii[0]],
    }


def _job_inputs(method, ident, bench, k, rows, protocol, mode, settings) -> str:
    relevant = dict(settings)
    relevant.pop("torch_threads")  # does not change results
    if protocol == "flip":
        for key in ("max_clicks", "target_iou", "adapter"):
            relevant.pop(key)
    if mode != "ellipse":
        relevant.pop("baseline_radii")
    return canonical_json({
        "schema": RESULT_SCHEMA_VERSION, "method": method, "method_identity": ident, "dataset": bench.name,
        "shard": bench.shards[k], "shard_sha256": bench.shard_sha256[k],
        "instances_sha256": hashlib.sha256(canonical_json(list(rows)).encode()).hexdigest(),
        "protocol": protocol, "mode": mode, "settings": relevant,
    })


def result_path(out_dir: Path, method: str, dataset: str, shard: str, protocol: str, mode: str) -> Path:
    return out_dir / "results" / method / dataset / Path(shard).stem / f"{protocol}__{mode}.parquet"


def plan_tasks(config: EvalConfig, benches: list[Benchmark], methods: list[tuple[str, str | None, str]],
               radii: dict) -> tuple[list[EvalTask], list[EvalTask]]:
    """All tasks of the run, split into ``(to_run, already_done)``.

    Args:
        methods: ``(tag, checkpoint path or None, identity)``; identity is the checkpoint sha256 or "ellipse".
        radii: ``dataset -> calibrate_baseline(...)`` result.
    """
    to_run, done = [], []
    for tag, ckpt, ident in methods:
        modes = ("ellipse",) if ckpt is None else config.modes
        for bench in benches:
            settings = _settings(config, radii.get(bench.name) if ckpt is None else None)
            for k, (rows, sids) in bench.rows.items():
                jobs, all_jobs = [], []
                for protocol in config.protocols:
                    for mode in modes:
                        inputs = _job_inputs(tag, ident, bench, k, rows, protocol, mode, settings)
                        path = result_path(config.out_path.resolve(), tag, bench.name, bench.shards[k], protocol,
                                           mode)
                        job = ResultJob(protocol=protocol, mode=mode, path=str(path), inputs=inputs)
                        all_jobs.append(job)
                        current, why = result_is_current(path, job.sha256)
                        if not current:
                            if why != "missing":
                                logger.warning("%s: %s; recomputing", path, why)
                            jobs.append(job)
                task = EvalTask(method=tag, checkpoint=ckpt, dataset_path=bench.path, dataset=bench.name,
                                shard_index=k, shard=bench.shards[k], instance_rows=rows, source_ids=sids,
                                jobs=tuple(jobs or all_jobs), settings=settings)
                (to_run if jobs else done).append(task)
    return to_run, done


def _clean_stale_tmp(out_dir: Path) -> None:
    results = out_dir / "results"
    if results.exists():
        for tmp in results.rglob(".*.parquet.tmp-*"):
            logger.info("removing partial file left by an interrupted run: %s", tmp)
            tmp.unlink(missing_ok=True)


def execute_tasks(tasks: list[EvalTask], config: EvalConfig) -> list[TaskOutcome]:
    """Run ``tasks`` on Ray (at most ``num_workers`` at a time, 1 CPU each) or in-process when ``num_workers == 0``.

    Raises:
        RuntimeError: listing every failed task (tasks that finished keep their results).
    """
    _clean_stale_tmp(config.out_path)
    if not tasks:
        return []
    if config.num_workers == 0:
        return [run_task(t) for t in tasks]
    import ray

    from flip_core.env import apply_local_defaults

    apply_local_defaults()
    started = False
    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=config.num_workers, include_dashboard=False)
        started = True
    try:
        return _drive(ray, tasks, config.num_workers)
    finally:
        if started:
            ray.shutdown()


def _drive(ray, tasks: list[EvalTask], limit: int) -> list[TaskOutcome]:
    remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
    pending = list(tasks)
    inflight: dict = {}
    outcomes, failures = [], []
    t0 = time.perf_counter()
    while pending or inflight:
        while pending and len(inflight) < limit:
            task = pending.pop(0)
            inflight[remote.remote(task)] = task
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            task = inflight.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:
                failures.append(f"{task.method} on {task.dataset}/{task.shard}: {exc}")
                logger.error("task failed: %s on %s/%s: %s", task.method, task.dataset, task.shard, exc)
                continue
            outcomes.append(outcome)
            logger.info("[%d/%d] %s %s/%s done in %.1f s (%.1f s elapsed)", len(outcomes), len(tasks),
                        outcome.method, outcome.dataset, outcome.shard, outcome.wall_s, time.perf_counter() - t0)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(tasks)} evaluation task(s) failed; finished tasks are kept "
                           "and a rerun resumes:\n  " + "\n  ".join(failures))
    return outcomes
