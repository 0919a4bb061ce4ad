"""LVIS spec: v0.5 sample (file_name vs coco_url resolution, metadata kept), v1-style records, missing files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from pycocotools import mask as mask_utils

from datasets_spec.base import InstanceMask
from datasets_spec.lvis import LvisSpec
from flip_core.convert.task import build_image


def test_present_subset_resolves_coco_url_layout(shared_data):
    root = shared_data("lvis")
    spec = LvisSpec(images=root, annotations=root / "lvis_val_100.present_subset.json")
    samples = list(spec.samples())
    assert spec.name == "lvis-val_100" and len(samples) == 23
    assert all(s.image_path.is_file() for s in samples)
    s = samples[0]
    assert s.file_name.startswith("val2017/") and s.metadata["lvis_file_name"].startswith("COCO_val2014_")
    assert "neg_category_ids" in s.metadata and "not_exhaustive_category_ids" in s.metadata
    meta = spec.file_metadata()
    assert meta["lvis_version"] == "v0.5"
    cats = json.loads(meta["coco_categories"])
    assert len(cats) == 1230 and {"frequency", "synset"} <= set(cats[0])


def test_masks_equal_pycocotools(shared_data):
    root = shared_data("lvis")
    path = root / "lvis_val_100.present_subset.json"
    data = json.loads(path.read_text())
    by_id = {a["id"]: a for a in data["annotations"]}
    spec = LvisSpec(images=root, annotations=path)
    for sample in list(spec.samples())[:4]:
        for item in spec.load_masks(sample, sample.height, sample.width):
            assert isinstance(item, InstanceMask)
            seg = by_id[int(item.source_id.split("/")[-1])]["segmentation"]
            expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, sample.height, sample.width)))
            np.testing.assert_array_equal(item.mask, expected)


def test_full_sample_reports_missing_files(shared_data):
    root = shared_data("lvis")
    spec = LvisSpec(images=root, annotations=root / "lvis_val_100.json")
    samples = list(spec.samples())
    assert len(samples) == 100
    missing = [s for s in samples if not s.image_path.is_file()]
    assert len(missing) == 77
    image, rejects = build_image(spec, missing[0], max_pixels=10**8)
    assert image is None and [r.reason for r in rejects] == ["missing_file"]
    msg = rejects[0].message
    assert msg.startswith(missing[0].source_id) and "tried:" in msg and "COCO_val2014_" in msg and "val2017/" in msg


def test_v1_records_without_file_name(shared_data, tmp_path):
    root = shared_data("lvis")
    data = json.loads((root / "lvis_val_100.present_subset.json").read_text())
    for img in data["images"]:
        del img["file_name"]
    for ann in data["annotations"][:3]:
        ann["lvis_extra"] = "kept"
    path = tmp_path / "lvis_v1_val.json"
    path.write_text(json.dumps(data))
    spec = LvisSpec(images=root, annotations=path)
    samples = list(spec.samples())
    assert spec.file_metadata()["lvis_version"] == "v1" and spec.name == "lvis-v1_val"
    assert all(s.image_path.is_file() and s.file_name.startswith("val2017/") for s in samples)
    extra = Counter(i.metadata.get("lvis_extra") for s in samples for i in s.instances)
    assert extra["kept"] == 3
