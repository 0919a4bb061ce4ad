"""Spec-side cost of the issue-8 formats: enumeration and per-image decode, against a plain-Pillow baseline.

Usage::

    .venv/bin/python benchmarks/bench_dataset_specs.py [--repeats 5] [--kitti-frames 24]

For each source the script times, median over ``--repeats`` runs, single process:

* ``enumerate``: ``list(spec.samples())`` + ``spec.enumeration_rejects()`` (what the converter's driver does);
* ``load``: ``load_image`` + decode + ``load_masks`` for every sample (what a shard task does before encoding);
* ``baseline``: opening the same image and mask files with Pillow and converting them to arrays, nothing else.

``load / baseline`` is the overhead our spec logic adds to bare decoding (pairing, id-map splitting, ignore bands,
resizing). Real samples from ../shared/data for GrabCut, Berkeley, DAVIS, COCO_MVal; a synthetic KITTI-360 tree of
``--kitti-frames`` 1408x376 frames; a synthetic SA-1B tar of 8 portrait 1500x2250 images x 20 masks, bucketed
to 544x352.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets_spec.berkeley import berkeley_spec  # noqa: E402
from datasets_spec.coco_mval import coco_mval_spec  # noqa: E402
from datasets_spec.davis import davis_spec  # noqa: E402
from datasets_spec.grabcut import grabcut_spec  # noqa: E402
from datasets_spec.kitti360 import Kitti360Spec  # noqa: E402
from datasets_spec.sa1b import SA1BSpec  # noqa: E402
from tests.common.spec_fixtures import KITTI_SEQ, decode_any, rgb_png, sa1b_members, write_tar  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _load_all(spec, samples):
    for s in samples:
        rgb = decode_any(spec.load_image(s))
        spec.load_masks(s, *rgb.shape[:2])


def _baseline(files):
    for f in files:
        with Image.open(f) as img:
            np.asarray(img)


def kitti_tree(root: Path, frames: int) -> list[Path]:
    rng = np.random.default_rng(0)
    inst = root / "data_2d_semantics" / "train" / KITTI_SEQ / "image_00" / "instance"
    inst.mkdir(parents=True)
    files = []
    for f in range(frames):
        ids = np.full((376, 1408), 7, np.uint16)
        ids[:100] = 23
        for k in range(12):
            y, x = rng.integers(100, 330), rng.integers(0, 1300)
            ids[y:y + 40, x:x + 90] = 26000 + k + 1
        name = f"{f:010d}.png"
        Image.fromarray(ids).save(inst / name)
        rgb_png(root / "data_2d_raw" / KITTI_SEQ / "image_00" / "data_rect" / name, 376, 1408, seed=f)
        files += [inst / name, root / "data_2d_raw" / KITTI_SEQ / "image_00" / "data_rect" / name]
    return files


def sa1b_tree(root: Path) -> None:
    members = {}
    for i in range(1, 9):
        jpg, js, _ = sa1b_members(i, 2250, 1500, n_masks=20)
        members[f"sa_{i}.jpg"], members[f"sa_{i}.json"] = jpg, js
    write_tar(root / "sa_000000.tar", members)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kitti-frames", type=int, default=24)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_specs_"))
    rows = []
    real = {
        "grabcut": (grabcut_spec(root=SHARED / "GrabCut"), ["data_GT", "boundary_GT"]),
        "berkeley": (berkeley_spec(root=SHARED / "Berkeley"), ["images", "masks"]),
        "davis": (davis_spec(root=SHARED / "DAVIS"), ["img", "gt"]),
        "coco_mval": (coco_mval_spec(root=SHARED / "COCO_MVal"), ["img", "gt"]),
    }
    for name, (spec, dirs) in real.items():
        files = [p for d in dirs for p in sorted((spec.root / d).iterdir())]
        rows.append((name, spec, files))
    rows.append(("kitti360", Kitti360Spec(root=tmp / "kitti"), kitti_tree(tmp / "kitti", args.kitti_frames)))
    sa1b_tree(tmp / "sa1b")
    rows.append(("sa1b (whole, tar)", SA1BSpec(root=tmp / "sa1b"), None))
    rows.append(("sa1b-544x352 (bucketed)", SA1BSpec(root=tmp / "sa1b", bucketing=True).buckets()["544x352"], None))
    print("| source | images | instances | enumerate ms | load ms/img | baseline ms/img | load / baseline |")
    print("|---|---|---|---|---|---|---|")
    for name, spec, files in rows:
        enum = _median_s(lambda: (list(spec.samples()), spec.enumeration_rejects()), args.repeats)
        samples = list(spec.samples())
        n_inst = sum(len(s.instances) for s in samples)
        load = _median_s(lambda: _load_all(spec, samples), args.repeats) / len(samples)
        if files is None:
            base_txt, ratio = "-", "-"
        else:
            base = _median_s(lambda: _baseline(files), args.repeats) / len(samples)
            base_txt, ratio = f"{base * 1e3:.1f}", f"{load / base:.2f}"
        print(f"| {name} | {len(samples)} | {n_inst} | {enum * 1e3:.1f} | {load * 1e3:.1f} | {base_txt} | {ratio} |")


if __name__ == "__main__":
    main()
