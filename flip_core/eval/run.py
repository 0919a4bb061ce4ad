"""``evaluate(config) -> EvalResult``: the plain function behind ``flip evaluate`` and the Prefect flows."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flip_core.eval.config import EvalConfig, EvalResult
from flip_core.eval.fanout import (
    calibrate_baseline,
    check_checkpoint_loads,
    checkpoint_tag,
    execute_tasks,
    find_datasets,
    plan_tasks,
)
from flip_core.eval.report import write_report
from flip_core.eval.tasks import BASELINE_METHOD

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]


def evaluate(config: EvalConfig) -> EvalResult:
    """Evaluate every checkpoint (and the ellipse baseline) on every dataset, then write the report.

    Steps: check the checkpoints load and the datasets are usable (clear errors before any work); choose the
    baseline radii by cross-fitting; plan one task per (method, shard), skipping complete, current results; run the
    rest (Ray or in-process); aggregate every result file of the plan into ``OUT/report/``.

    Raises:
        FileNotFoundError / ValueError: a missing or unloadable checkpoint, a bad dataset (empty, no masks).
        RuntimeError: some tasks failed (finished ones are kept; rerun to resume).
    """
    t0 = time.perf_counter()
    methods = []
    seen = set()
    for path in config.checkpoints:
        tag, sha = checkpoint_tag(path)
        if tag in seen:
            raise ValueError(f"checkpoint {path} is given twice (same file name and content: {tag})")
        seen.add(tag)
        check_checkpoint_loads(path)
        methods.append((tag, str(Path(path).resolve()), sha))
    benches = find_datasets(config)
    radii = {}
    if config.baseline:
        methods.append((BASELINE_METHOD, None, BASELINE_METHOD))
        radii = {b.name: calibrate_baseline(b, config) for b in benches}
    to_run, done = plan_tasks(config, benches, methods, radii)
    logger.info("evaluation plan: %d tasks, %d already complete, %d to run", len(to_run) + len(done), len(done),
                len(to_run))
    outcomes = execute_tasks(to_run, config)
    paths = [job.path for task in to_run + done for job in task.jobs]
    rows, files = write_report(paths, config.out_dir, config.max_clicks)
    logger.info("report written: %s", ", ".join(str(f) for f in files))
    return EvalResult(
        tasks_planned=len(to_run) + len(done),
        tasks_run=tuple(outcomes),
        tasks_skipped=tuple((t.method, t.dataset, t.shard) for t in done),
        report_dir=str(config.out_path / "report"),
        summary=tuple(rows),
        baseline_radii=radii,
        wall_s=time.perf_counter() - t0,
    )
