"""Sharded, resumable dataset conversion on Ray (``flip convert``).

``convert_dataset(spec, out_dir, ...)`` turns any ``datasets_spec`` spec into FLIP HDF5 shards
(``flip_core.shards``) plus ``manifest.parquet``, ``rejects.parquet`` and ``index.json`` (``flip_core.manifest``).
Planning is in :mod:`flip_core.convert.plan`, the per-shard work in :mod:`flip_core.convert.task`, the driver in
:mod:`flip_core.convert.run` and the command line in :mod:`flip_core.convert.cli`.
"""

from flip_core.convert.plan import ShardPlan, plan_shards
from flip_core.convert.run import DEFAULT_SHARD_SIZE, ConversionSummary, convert_dataset

__all__ = ["convert_dataset", "ConversionSummary", "DEFAULT_SHARD_SIZE", "ShardPlan", "plan_shards"]
