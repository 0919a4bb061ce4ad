"""The converted-dataset directory: ``manifest.parquet``, ``rejects.parquet``, ``index.json`` and :func:`open_dataset`.

Layout written by ``flip_core.convert.convert_dataset``::

    OUT/
      shard-00000.h5 ...        FLIP HDF5 shards (flip_core.shards), N images each, sorted by image key
      manifest.parquet          one row per instance (MANIFEST_SCHEMA)
      rejects.parquet           one row per skipped image / instance / polygon (REJECTS_SCHEMA)
      index.json                written last: schema version, dataset, counts, per-shard file/sha256/counts
      _state/shard-00000.json   per-shard completion records (what makes a killed run resumable)

``index.json`` is the commit point: a directory without it is an unfinished conversion.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flip_core.shards import ShardReader, sha256_file

__all__ = [
    "INDEX_SCHEMA_VERSION",
    "MANIFEST_SCHEMA",
    "REJECTS_SCHEMA",
    "manifest_rows",
    "rejects_table",
    "write_parquet",
    "write_json_atomic",
    "ConvertedDataset",
    "open_dataset",
]

INDEX_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.parquet"
REJECTS_NAME = "rejects.parquet"
INDEX_NAME = "index.json"

MANIFEST_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("shard", pa.string()),
        ("instance_row", pa.int64()),
        ("image_row", pa.int64()),
        ("image_id", pa.int64()),
        ("source_id", pa.string()),
        ("file_name", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("area_px", pa.int64()),
        ("category_id", pa.int64()),
        ("mu_x", pa.float32()),
        ("mu_y", pa.float32()),
        ("var_x", pa.float32()),
        ("var_y", pa.float32()),
        ("cov_xy", pa.float32()),
        ("bbox_x0", pa.float32()),
        ("bbox_y0", pa.float32()),
        ("bbox_x1", pa.float32()),
        ("bbox_y1", pa.float32()),
        ("image_encoding", pa.string()),
    ]
)
"""One row per instance. Gaussian ``mu_x..cov_xy`` in frame N (spec 1.2), bbox inclusive in frame P."""

REJECTS_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("shard", pa.string()),
    ]
)
"""One row per skipped record; ``shard`` is empty for records rejected before planning."""


def manifest_rows(shard_path: Path, dataset: str) -> pa.Table:
    """Manifest rows of one shard, read back from the shard file itself (so they always agree with it)."""
    with ShardReader(shard_path) as reader:
        owner = reader.column("instance_masks_images")[:, 0].astype(np.int64)
        shapes = reader.column("image_shapes")
        positions = reader.column("positions").reshape(-1, 5)
        bboxes = reader.column("instance_mask_bboxes").reshape(-1, 4)
        n = len(owner)
        columns = {
            "dataset": [dataset] * n,
            "shard": [Path(shard_path).name] * n,
            "instance_row": np.arange(n, dtype=np.int64),
            "image_row": owner,
            "image_id": reader.column("coco_image_ids")[owner],
            "source_id": list(reader.column("source_ids")),
            "file_name": list(reader.column("file_names")[owner]),
            "width": shapes[owner, 1].astype(np.int32) if n else np.zeros(0, np.int32),
            "height": shapes[owner, 0].astype(np.int32) if n else np.zeros(0, np.int32),
            "area_px": reader.column("areas"),
            "category_id": reader.column("category_ids"),
            "image_encoding": list(reader.column("image_encodings")[owner]),
        }
    for k, name in enumerate(("mu_x", "mu_y", "var_x", "var_y", "cov_xy")):
        columns[name] = positions[:, k]
    for k, name in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
        columns[name] = bboxes[:, k]
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)


def rejects_table(rows: list[dict]) -> pa.Table:
    """Rejects as a table with :data:`REJECTS_SCHEMA` (missing ``shard`` becomes ``""``)."""
    return pa.table(
        {f.name: pa.array([str(r.get(f.name) or "") for r in rows], type=pa.string()) for f in REJECTS_SCHEMA},
        schema=REJECTS_SCHEMA,
    )


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` atomically (temp file + fsync + rename); same table -> same bytes."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", write_statistics=True)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(obj, path: Path) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(kw_only=True)
class ConvertedDataset:
    """A finished conversion directory (see the module docstring)."""

    root: Path
    """The output directory."""
    index: dict
    """Parsed ``index.json``."""
    _manifest: pa.Table | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.index["dataset"]

    @property
    def shards(self) -> list[Path]:
        """Shard paths in order."""
        return [self.root / s["file"] for s in self.index["shards"]]

    @property
    def manifest(self) -> pa.Table:
        """The instance manifest (:data:`MANIFEST_SCHEMA`), loaded on first use."""
        if self._manifest is None:
            self._manifest = pq.read_table(self.root / self.index.get("manifest", MANIFEST_NAME))
        return self._manifest

    @property
    def rejects(self) -> pa.Table:
        return pq.read_table(self.root / self.index.get("rejects", REJECTS_NAME))

    def reader(self, shard_idx: int) -> ShardReader:
        """A (lazy) reader of shard ``shard_idx``."""
        return ShardReader(self.shards[shard_idx])

    def verify(self) -> list[str]:
        """Problems found: missing or corrupt shards / tables (sha256 against ``index.json``). Empty = all good."""
        problems = []
        entries = [(s["file"], s["sha256"]) for s in self.index["shards"]]
        entries += [(self.index[k], self.index[f"{k}_sha256"]) for k in ("manifest", "rejects") if k in self.index]
        for name, digest in entries:
            path = self.root / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path}: sha256 differs from index.json (corrupt or modified)")
        return problems


def open_dataset(path: str | os.PathLike) -> ConvertedDataset:
    """Open a converted dataset from its directory, its ``index.json`` or its ``manifest.parquet``.

    Raises:
        FileNotFoundError: no ``index.json`` there (the conversion did not finish).
        ValueError: ``index.json`` has an unknown schema version.
    """
    path = Path(path)
    root = path if path.is_dir() else path.parent
    index_path = root / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: {root} is not a finished conversion (index.json is written last)")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if index.get("schema_version") != INDEX_SCHEMA_VERSION:
        raise ValueError(f"{index_path}: schema_version {index.get('schema_version')!r}, expected {INDEX_SCHEMA_VERSION}")
    return ConvertedDataset(root=root, index=index)
