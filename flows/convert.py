"""``convert`` flow: one Prefect task per dataset source, each running the sharded Ray conversion.

The task wraps :func:`flip_core.convert.convert_dataset`. It is retried (2 retries, 2 s apart) only when it fails with
an I/O error (``OSError``: a storage hiccup while reading the source or writing shards); bad input (unknown options,
malformed annotations) fails at once. Per-record problems never fail the task: they are rows of the source's
``rejects.parquet`` and of the ``conversion-summary`` artifact. Reruns resume: shards whose files verify against
their sha256 are reused, missing or corrupt ones are rewritten (the converter's own verification; no Prefect result
cache is needed, and none is used, so a rerun always re-checks the files on disk).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import conversion_markdown, publish
from flows.params import ConvertParams, DataSource, build_spec
from flows.runtime import RayUnavailableError, ray_runtime

__all__ = ["convert", "convert_source", "retry_on_io_error"]


def retry_on_io_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry OSErrors (not RayUnavailableError), fail everything else at once."""
    try:
        state.result()
    except RayUnavailableError:
        return False
    except OSError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final
        return False
    return False


def _rejects_rows(out_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    path = out_dir / "rejects.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


@task(name="convert-source", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io_error,
      cache_policy=NO_CACHE, task_run_name="convert-{source.format}")
def convert_source(source: DataSource, out_dir: str, params: ConvertParams):
    """Convert one source into ``out_dir/<source name>``; returns its ``ConversionSummary``."""
    from flip_core.convert import convert_dataset

    logger = get_run_logger()
    target = Path(out_dir) / source.label
    logger.info("converting %s (%s) into %s", source.label, source.format, target)
    workers = {"num_workers": params.num_workers} if params.num_workers else {}
    summary = convert_dataset(build_spec(source), target, shard_size=params.shard_size, overwrite=params.overwrite,
                              progress=False, **workers)  # Ray: the flow's connection (ray_runtime)
    logger.info("%s: %d images, %d instances, %d rejects, %d shards (%d reused) in %.1f s", source.label,
                summary.images, summary.instances, sum(summary.rejects_by_reason.values()), summary.shards,
                summary.skipped_shards, summary.wall_s)
    return summary


@flow(name="convert")
def convert(sources: list[DataSource], out_dir: str = "flip-runs/default/shards",
            params: ConvertParams = ConvertParams(), ray_address: str | None = None) -> dict[str, str]:
    """Convert every source (concurrently) and publish the ``conversion-summary`` artifact.

    Returns:
        Source name -> converted dataset directory (``manifest.parquet``, ``index.json``, shards).
    """
    labels = [s.label for s in sources]
    if len(set(labels)) != len(labels):
        raise ValueError(f"source names must be unique (set `name` on repeated formats): {labels}")
    with ray_runtime(ray_address) as where:
        get_run_logger().info("converting %d source(s) on Ray: %s", len(sources), where)
        futures = {s.label: convert_source.submit(s, out_dir, params) for s in sources}
        summaries = {label: future.result() for label, future in futures.items()}
    out_dirs = {label: Path(out_dir) / label for label in summaries}
    rejects = {label: _rejects_rows(path) for label, path in out_dirs.items()}
    publish("conversion-summary", conversion_markdown(summaries, out_dirs, rejects),
            "images, instances, shards and rejects per source")
    return {label: str(path) for label, path in out_dirs.items()}
