"""``evaluate`` flow: the fan-out evaluation of :func:`flip_core.eval.evaluate` and the ``evaluation-report``
artifact. Runnable on its own against existing checkpoints and converted datasets (deployment ``evaluate/local``);
finished (checkpoint, shard) tasks are skipped by the evaluator, so reruns only do what is missing or changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import evaluation_markdown, publish
from flows.params import EvalParams
from flows.runtime import ray_runtime

__all__ = ["evaluate", "evaluate_task", "build_eval_config"]


def build_eval_config(checkpoints: list[str], data: list[str], out_dir: str, params: EvalParams,
                      ray_address: str | None):
    """``EvalParams`` -> ``flip_core.eval.EvalConfig`` (``params.overrides`` are EvalConfig fields, verbatim).

    Raises:
        ValueError: an unknown override or a value EvalConfig rejects.
    """
    from flip_core.eval.config import EvalConfig

    valid = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(params.overrides) - valid)
    if unknown:
        raise ValueError(f"unknown evaluation override(s) {unknown}; valid: {sorted(valid)}")
    fields = {"protocols": tuple(params.protocols), "seed": params.seed, "max_instances": params.max_instances,
              "ray_address": ray_address}
    if params.num_workers is not None:
        fields["num_workers"] = params.num_workers
    fields.update({k: tuple(v) if isinstance(v, list) else v for k, v in params.overrides.items()})
    return EvalConfig(checkpoints=tuple(checkpoints), data=tuple(data), out_dir=out_dir, **fields)


@task(name="evaluate-checkpoints", cache_policy=NO_CACHE)
def evaluate_task(checkpoints: list[str], data: list[str], out_dir: str, params: EvalParams,
                  ray_address: str | None):
    """Run the evaluation; returns ``flip_core.eval.EvalResult``."""
    from flip_core.eval import evaluate as evaluate_checkpoints

    result = evaluate_checkpoints(build_eval_config(checkpoints, data, out_dir, params, ray_address))
    get_run_logger().info("evaluation: %d tasks planned, %d run, %d reused; report in %s", result.tasks_planned,
                          len(result.tasks_run), len(result.tasks_skipped), result.report_dir)
    return result


@flow(name="evaluate")
def evaluate(checkpoints: list[str], data: list[str], out_dir: str = "flip-runs/default/eval",
             params: EvalParams = EvalParams(), ray_address: str | None = None) -> str:
    """Evaluate ``checkpoints`` on the converted datasets ``data``; publish ``evaluation-report``.

    Returns:
        The report directory (``OUT/report``: summary CSV/Markdown and PNG plots).
    """
    missing = [p for p in [*checkpoints, *data] if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"evaluation inputs not found: {missing}")
    with ray_runtime(ray_address) as where:
        get_run_logger().info("evaluating %d checkpoint(s) on %d dataset(s); Ray: %s", len(checkpoints), len(data),
                              where)
        result = evaluate_task(checkpoints, data, out_dir, params, None)  # None: use the flow's Ray connection
    report_dir = Path(result.report_dir)
    plots = sorted(report_dir.glob("*.png"))
    publish("evaluation-report", evaluation_markdown(result.to_markdown(), plots, report_dir),
            "per checkpoint x benchmark table, with links to the plots")
    return str(report_dir)
