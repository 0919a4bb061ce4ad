"""Conversion throughput: ``convert_dataset`` on Ray (1 and 2 workers) vs the reference-style converter.

Data: the real COCO sample in ``../shared/data/coco`` (val2017 + train2017: 24 images, 343 non-crowd instances),
repeated ``--repeat`` times under distinct image ids so that runs last long enough to time.

Baseline ("reference-style", one process, measured in the same run): what
``model/scripts/convert_coco_to_hdf5.py`` does per image (spec 1.1-1.3), with Pillow standing in for OpenCV:
decode the JPEG to RGB, re-encode it at quality 95, decode each annotation with pycocotools, encode the mask as a
PNG (Pillow defaults), compute the moments in float32 over full-image grids and the bbox with the reference's
full-grid products, and append every row to HDF5 datasets created with ``maxshape=None`` (one resize per row).

Ours: ``flip_core.convert.convert_dataset`` on a local Ray started once (``num_cpus=2``) before timing, with
``num_workers`` 1 and 2, writing a fresh output directory each run (``overwrite=True``); the wall time includes
enumeration, planning, all shard tasks, the manifest, rejects and index. Also "ours, in-process": the same shard
function called in a plain loop, which shows the per-worker cost without Ray's scheduling.

Every figure is the median of ``--runs`` runs (after one warm-up run of each variant).

    python benchmarks/bench_convert.py [--repeat 8] [--runs 5] [--shard-size 16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets_spec.coco import CocoSpec  # noqa: E402
from flip_core.env import apply_local_defaults  # noqa: E402

DATA = Path(os.environ.get("FLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
KEY_STRIDE = 10**13  # > any COCO image id


class RepeatedSpec:
    """``copies`` copies of each wrapped spec's samples under distinct keys (benchmark only)."""

    def __init__(self, specs, copies: int):
        self.specs = specs
        self.copies = copies
        self.name = "coco-bench"
        self.dataset_type = "bench"

    def samples(self):
        for s_idx, spec in enumerate(self.specs):
            for sample in spec.samples():
                for c in range(self.copies):
                    yield dataclasses.replace(sample, key=sample.key + (c * len(self.specs) + s_idx) * KEY_STRIDE,
                                              source_id=f"{sample.source_id}#{c}", payload=s_idx)

    def enumeration_rejects(self):
        return [r for spec in self.specs for r in spec.enumeration_rejects()]

    def file_metadata(self):
        return {"type": "bench"}

    def load_image(self, sample):
        return self.specs[sample.payload].load_image(sample)

    def load_masks(self, sample, height, width):
        return self.specs[sample.payload].load_masks(sample, height, width)


def coco_specs():
    return [CocoSpec(images=DATA / "coco" / split, annotations=DATA / "coco" / "annotations" / f"instances_{split}.json")
            for split in ("val2017", "train2017")]


# ---------------------------------------------------------------------------------------------------------------
# Reference-style baseline


def _ref_moments_float32(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    m = (mask > 0.5).astype(np.float32)
    x = np.broadcast_to(np.linspace(-1, 1, w, dtype=np.float32)[None, :], (h, w))
    y = np.broadcast_to(np.linspace(-1, 1, h, dtype=np.float32)[:, None], (h, w))
    s = max(float(m.sum()), 1e-16)
    mx, my = (m * x).sum() / s, (m * y).sum() / s
    return np.array([mx, my, (m * x * x).sum() / s - mx * mx, (m * y * y).sum() / s - my * my,
                     (m * x * y).sum() / s - mx * my], dtype=np.float32)


def _ref_bbox(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    inside = (mask > 0.75).astype(np.float32)
    xs = np.arange(w, dtype=np.float32)[None, :] * inside
    ys = np.arange(h, dtype=np.float32)[:, None] * inside
    xm, ym = xs[xs > 0], ys[ys > 0]  # the reference's x_coords*mask > 0 (row/column 0 never count)
    if xm.size == 0 or ym.size == 0:
        return np.array([np.inf, np.inf, -np.inf, -np.inf], dtype=np.float32)
    return np.array([xm.min(), ym.min(), xm.max(), ym.max()], dtype=np.float32)


class _Appender:
    """HDF5 datasets grown one row at a time, like the reference ``HDF5Dataset``."""

    def __init__(self, path: Path):
        self.f = h5py.File(path, "w")
        vl, st = h5py.vlen_dtype(np.uint8), h5py.string_dtype()
        spec = {"rgb_images": ((), vl), "instance_masks": ((), vl), "sequence_indices": ((2,), np.int64),
                "image_instance_indices": ((2,), np.int64), "instance_masks_images": ((1,), np.int64),
                "instance_mask_bboxes": ((4,), np.float32), "positions": ((5,), np.float32),
                "coco_image_ids": ((), np.int64), "license_ids": ((), np.uint8), "file_names": ((), st),
                "flickr_urls": ((), st), "coco_urls": ((), st), "transform_notes": ((), st)}
        for name, (shape, dtype) in spec.items():
            numeric = dtype not in (vl, st) and shape
            kw = {"compression": "gzip", "compression_opts": 5} if numeric else {}
            self.f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype, **kw)

    def append(self, name: str, value) -> None:
        d = self.f[name]
        d.resize(d.shape[0] + 1, axis=0)
        d[-1] = value

    def close(self):
        self.f.close()


def run_baseline(spec: RepeatedSpec, out: Path) -> tuple[int, int]:
    """The reference-style single-process conversion; returns (images, instances)."""
    samples = sorted(spec.samples(), key=lambda s: s.key)
    out.mkdir(parents=True, exist_ok=True)
    app = _Appender(out / "baseline.hdf5")
    n_img = n_inst = 0
    for sample in samples:
        rgb = np.asarray(Image.open(io.BytesIO(spec.load_image(sample))).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
        h, w = rgb.shape[:2]
        rows = []
        for item in spec.load_masks(sample, h, w):
            mask = np.asarray(item.mask, dtype=np.uint8)
            if not mask.any():
                continue
            png = io.BytesIO()
            Image.fromarray(mask * 255).save(png, format="PNG")
            rows.append((png.getvalue(), _ref_bbox(mask), _ref_moments_float32(mask)))
        if not rows:
            continue
        for png, bbox, pos in rows:
            app.append("instance_masks", np.frombuffer(png, np.uint8))
            app.append("instance_masks_images", [n_img])
            app.append("instance_mask_bboxes", bbox)
            app.append("positions", pos)
        app.append("rgb_images", np.frombuffer(buf.getvalue(), np.uint8))
        app.append("sequence_indices", [n_img, 1])
        app.append("image_instance_indices", [n_inst, len(rows)])
        app.append("coco_image_ids", sample.key % 2**62)
        app.append("license_ids", sample.license_id)
        app.append("file_names", sample.file_name)
        app.append("flickr_urls", str(sample.metadata.get("flickr_url", "")))
        app.append("coco_urls", str(sample.metadata.get("coco_url", "")))
        app.append("transform_notes", "recompressed JPEG; no creative edits")
        n_img += 1
        n_inst += len(rows)
    app.close()
    return n_img, n_inst


# ---------------------------------------------------------------------------------------------------------------
# Ours


def run_inprocess(spec: RepeatedSpec, out: Path, shard_size: int) -> tuple[int, int]:
    """Our shard function in a plain loop (no Ray), then nothing else: the per-worker cost."""
    from flip_core.convert.plan import plan_shards
    from flip_core.convert.task import ShardSettings, convert_shard

    out.mkdir(parents=True, exist_ok=True)
    settings = ShardSettings(out_dir=str(out), dataset_name=spec.name, dataset_type="bench", file_metadata={},
                             max_pixels=10**8)
    images = instances = 0
    for plan in plan_shards(spec.samples(), shard_size=shard_size, settings={}):
        result = convert_shard(spec, plan, settings)
        images += result.images
        instances += result.instances
    return images, instances


def run_ours(spec: RepeatedSpec, out: Path, shard_size: int, workers: int) -> tuple[int, int]:
    from flip_core.convert import convert_dataset

    summary = convert_dataset(spec, out, shard_size=shard_size, num_workers=workers, overwrite=True, progress=False)
    return summary.images, summary.instances


def timed(fn, runs: int) -> tuple[float, int, int, list[float]]:
    """Median wall seconds over ``runs`` runs (after one untimed warm-up); each run gets a fresh directory."""
    times = []
    for k in range(runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
            t0 = time.perf_counter()
            images, instances = fn(Path(tmp) / "out")
            if k:
                times.append(time.perf_counter() - t0)
    return statistics.median(times), images, instances, times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8, help="copies of the 24-image sample (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant; the median is reported")
    parser.add_argument("--shard-size", type=int, default=16, help="images per shard (default 16)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    apply_local_defaults()
    import ray

    spec = RepeatedSpec(coco_specs(), args.repeat)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        variants = {
            "reference-style (1 process)": lambda out: run_baseline(spec, out),
            "ours in-process (1 process, no Ray)": lambda out: run_inprocess(spec, out, args.shard_size),
            "ours on Ray, 1 worker": lambda out: run_ours(spec, out, args.shard_size, 1),
            "ours on Ray, 2 workers": lambda out: run_ours(spec, out, args.shard_size, 2),
        }
        results = {}
        for name, fn in variants.items():
            median, images, instances, times = timed(fn, args.runs)
            results[name] = {"median_s": median, "images": images, "instances": instances, "times_s": times,
                             "images_per_s": images / median, "instances_per_s": instances / median}
            print(f"{name}: median {median:.3f} s over {times}", file=sys.stderr)
    finally:
        ray.shutdown()

    base = results["reference-style (1 process)"]["images_per_s"]
    one = results["ours on Ray, 1 worker"]["images_per_s"]
    print(f"# bench_convert: {results['ours on Ray, 1 worker']['images']} images, "
          f"{results['ours on Ray, 1 worker']['instances']} instances (COCO sample x{args.repeat}), "
          f"shard size {args.shard_size}, median of {args.runs} runs")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print()
    print("| variant | median wall (s) | images/s | instances/s | vs reference-style | vs 1 worker |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['median_s']:.3f} | {r['images_per_s']:.1f} | {r['instances_per_s']:.1f} | "
              f"{r['images_per_s'] / base:.2f}x | {r['images_per_s'] / one:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
