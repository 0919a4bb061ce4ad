"""Test helpers for the evaluation tests: synthetic converted datasets built with the real shard writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
import io

from flip_core.gaussian import mask_bbox, mask_moments
from flip_core.images import encode_mask_png
from flip_core.shards import ShardImage, ShardInstance, write_shard


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=95)
    return out.getvalue()


def synthetic_image(rng: np.random.Generator, h: int, w: int, n_objects: int, ignore_band: bool):
    """Image with ``n_objects`` coloured ellipses; returns (rgb, [(mask, ignore or None)])."""
    rgb = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    objs = []
    for _ in range(n_objects):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        mask = d <= 1
        rgb[mask] = rng.integers(120, 255, size=3)
        ignore = ((d > 0.8) & (d <= 1.25)) if ignore_band else None
        objs.append((mask, ignore))
    return rgb, objs


def build_dataset(root: Path, name: str, *, shards: int = 2, images_per_shard: int = 2, objects: int = 2,
                  size=(48, 64), seed: int = 0, ignore_band: bool = False) -> Path:
    """Write ``root/<name>/`` with shards, ``manifest.parquet`` and ``index.json`` (CONTRACTS layout)."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    from flip_core.manifest import manifest_rows

    tables, index_shards = [], []
    image_id = 0
    for s in range(shards):
        images = []
        for _ in range(images_per_shard):
            h, w = size
            rgb, objs = synthetic_image(rng, h, w, objects, ignore_band)
            inst = []
            for k, (mask, ignore) in enumerate(objs):
                inst.append(ShardInstance(
                    mask_png=encode_mask_png(mask), bbox=mask_bbox(mask), moments=mask_moments(mask),
                    area_px=int(mask.sum()), source_id=f"{name}/img{image_id}/obj{k}",
                    ignore_png=b"" if ignore is None else encode_mask_png(ignore)))
            images.append(ShardImage(image_id=image_id, file_name=f"{image_id}.jpg", jpeg=_jpeg(rgb),
                                     encoding="reencoded-jpeg", width=w, height=h, instances=tuple(inst)))
            image_id += 1
        fname = f"shard-{s:05d}.h5"
        sha = write_shard(out / fname, images, dataset_name=name, dataset_type="test")
        tables.append(manifest_rows(out / fname, name))
        index_shards.append({"file": fname, "sha256": sha, "images": len(images),
                             "instances": tables[-1].num_rows})
    pq.write_table(pa.concat_tables(tables), out / "manifest.parquet")
    (out / "index.json").write_text(json.dumps({"schema_version": 1, "dataset": name, "shards": index_shards}))
    return out
