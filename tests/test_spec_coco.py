"""COCO spec: enumeration, decoding and every malformed-input rule, on the real sample and small synthetic JSONs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from datasets_spec.base import InstanceMask, Reject, SpecError
from datasets_spec.coco import CocoSpec, _rle_string_total, decode_segmentation


def write_coco(tmp_path: Path, images: list[dict], annotations: list[dict], name="instances_test.json", **extra) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}],
                                **extra}))
    return path


def _img(i, w=40, h=30, **kw):
    return {"id": i, "file_name": f"{i}.jpg", "width": w, "height": h, **kw}


def _ann(i, image_id, seg, **kw):
    return {"id": i, "image_id": image_id, "category_id": 1, "segmentation": seg, **kw}


def test_real_val2017_enumeration(shared_data):
    spec = CocoSpec(images=shared_data("coco", "val2017"),
                    annotations=shared_data("coco", "annotations", "instances_val2017.json"))
    samples = list(spec.samples())
    assert spec.name == "coco-val2017" and spec.dataset_type == "val2017"
    assert len(samples) == 19
    assert sum(len(s.instances) for s in samples) == 296 - 6
    assert Counter(r.reason for s in samples for r in s.rejects) == {"crowd": 6}
    assert spec.enumeration_rejects() == []
    meta = spec.file_metadata()
    assert len(json.loads(meta["coco_categories"])) == 80 and json.loads(meta["coco_licenses"])
    assert all(s.image_path.is_file() for s in samples)


def test_real_masks_equal_pycocotools(shared_data):
    ann_path = shared_data("coco", "annotations", "instances_val2017.json")
    spec = CocoSpec(images=shared_data("coco", "val2017"), annotations=ann_path, keep_crowd=True)
    data = json.loads(ann_path.read_text())
    by_id = {a["id"]: a for a in data["annotations"]}
    images = {im["id"]: im for im in data["images"]}
    checked = 0
    for sample in list(spec.samples())[:6]:
        for item in spec.load_masks(sample, sample.height, sample.width):
            assert isinstance(item, InstanceMask)
            ann = by_id[int(item.source_id.split("/")[-1])]
            im = images[ann["image_id"]]
            seg = ann["segmentation"]
            rle = mask_utils.frPyObjects(seg, im["height"], im["width"])
            expected = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
            np.testing.assert_array_equal(item.mask, expected)
            checked += 1
    assert checked > 50


def test_keep_crowd_decodes_uncompressed_rle(shared_data):
    spec = CocoSpec(images=shared_data("coco", "val2017"),
                    annotations=shared_data("coco", "annotations", "instances_val2017.json"), keep_crowd=True)
    samples = list(spec.samples())
    assert not any(s.rejects for s in samples)
    crowd = [(s, i) for s in samples for i in s.instances if i.metadata.get("iscrowd")]
    assert len(crowd) == 6
    sample, inst = crowd[0]
    assert inst.payload[0] == "rle" and isinstance(inst.payload[1]["counts"], list)
    masks = spec.load_masks(sample, sample.height, sample.width)
    assert all(isinstance(m, InstanceMask) for m in masks)


def test_compressed_rle_from_real_results_file(shared_data):
    results = json.loads(shared_data("coco", "results", "instances_val2014_fakesegm100_results.json").read_text())
    for det in results[:20]:
        seg = det["segmentation"]
        h, w = seg["size"]
        got = decode_segmentation(("rle", seg), h, w, source_id="r")
        np.testing.assert_array_equal(got, mask_utils.decode({"size": [h, w], "counts": seg["counts"].encode()}))
        assert _rle_string_total(seg["counts"]) == h * w


def test_multi_polygon_merge_and_short_polygons(tmp_path):
    square = [2, 2, 10, 2, 10, 10, 2, 10]
    other = [20, 5, 30, 5, 30, 15]
    path = write_coco(tmp_path, [_img(1)], [
        _ann(10, 1, [square, other]),          # two parts, merged
        _ann(11, 1, [square, [1, 1, 5, 5]]),   # one part of 2 points dropped, the rest kept
        _ann(12, 1, [[1, 1, 5, 5]]),           # only polygon has 2 points: instance dropped
        _ann(13, 1, [[1, 1, 2, 2], [3]]),      # nothing usable at all
        _ann(14, 1, []),
    ])
    spec = CocoSpec(images=tmp_path, annotations=path)
    (sample,) = spec.samples()
    assert [i.source_id for i in sample.instances] == ["coco/ann/10", "coco/ann/11"]
    reasons = [(r.source_id, r.reason) for r in sample.rejects]
    assert reasons == [
        ("coco/ann/11#poly1", "polygon_lt_3_points"),
        ("coco/ann/12", "polygon_lt_3_points"),
        ("coco/ann/13#poly0", "polygon_lt_3_points"),
        ("coco/ann/13#poly1", "bad_polygon"),
        ("coco/ann/13", "no_valid_polygon"),
        ("coco/ann/14", "empty_segmentation"),
    ]
    assert all(r.message.startswith(r.source_id) for r in sample.rejects)
    merged, single = spec.load_masks(sample, 30, 40)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square, other], 30, 40)))
    np.testing.assert_array_equal(merged.mask, expected)
    assert merged.mask[:, 20:].any() and merged.mask[:, :11].any()
    np.testing.assert_array_equal(single.mask, mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square], 30, 40))))


def test_rle_problems_are_instance_rejects(tmp_path):
    ok = mask_utils.encode(np.asfortranarray(np.eye(30, 40, dtype=np.uint8)))
    path = write_coco(tmp_path, [_img(1)], [
        _ann(20, 1, {"size": [30, 40], "counts": ok["counts"].decode()}),
        _ann(21, 1, {"size": [31, 40], "counts": ok["counts"].decode()}),
        _ann(22, 1, {"size": [30, 40], "counts": [5, 10]}),
        _ann(23, 1, {"size": [30, 40], "counts": "!!"}),
        _ann(24, 1, {"size": [30, 40], "counts": [1200]}, iscrowd=1),
    ])
    spec = CocoSpec(images=tmp_path, annotations=path, keep_crowd=True)
    (sample,) = spec.samples()
    items = spec.load_masks(sample, 30, 40)
    np.testing.assert_array_equal(items[0].mask, np.eye(30, 40))
    assert [(type(x).__name__, getattr(x, "reason", None)) for x in items[1:]] == [
        ("Reject", "rle_size_mismatch"), ("Reject", "bad_rle"), ("Reject", "bad_rle"), ("InstanceMask", None)]
    assert "coco/ann/21" in items[1].message and "[31, 40]" in items[1].message
    assert not items[4].mask.any()  # an all-background RLE decodes fine; the converter rejects it as empty_mask


def test_unknown_image_and_path_escape(tmp_path):
    path = write_coco(tmp_path, [
        _img(1), {**_img(2), "file_name": "../outside.jpg"}, {**_img(3), "file_name": "/etc/passwd"},
    ], [_ann(30, 99, [[1, 1, 9, 1, 9, 9]]), _ann(31, 2, [[1, 1, 9, 1, 9, 9]])])
    spec = CocoSpec(images=tmp_path, annotations=path)
    samples = list(spec.samples())
    assert [s.key for s in samples] == [1]
    rejects = {r.source_id: r for r in spec.enumeration_rejects()}
    assert rejects["coco/ann/30"].reason == "unknown_image" and "99" in rejects["coco/ann/30"].message
    assert rejects["coco/img/2"].reason == "path_escape" and "../outside.jpg" in rejects["coco/img/2"].message
    assert "1 annotations dropped" in rejects["coco/img/2"].message
    assert rejects["coco/img/3"].reason == "path_escape" and "absolute" in rejects["coco/img/3"].message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ('{"images": [', "malformed JSON"),
        ("[]", "$: expected a JSON object"),
        ('{"annotations": []}', "$.images: missing required key"),
        ('{"images": [], "annotations": {}}', "$.annotations: expected list"),
        ('{"images": [{"id": 1, "file_name": "a.jpg", "height": 3}], "annotations": []}', "$.images[0].width: missing"),
        ('{"images": [{"id": "1", "file_name": "a", "width": 3, "height": 3}], "annotations": []}', "$.images[0].id: expected int"),
        ('{"images": [], "annotations": [{"id": 1, "image_id": 1}]}', "$.annotations[0].segmentation: missing"),
        ('{"images": [{"id": 1, "file_name": "a", "width": 3, "height": 3}, {"id": 1, "file_name": "b", '
         '"width": 3, "height": 3}], "annotations": []}', "$.images[1].id: duplicate image id 1"),
    ],
)
def test_malformed_json_raises_spec_error_with_json_path(tmp_path, payload, fragment):
    path = tmp_path / "instances_bad.json"
    path.write_text(payload)
    spec = CocoSpec(images=tmp_path, annotations=path)
    with pytest.raises(SpecError) as info:
        list(spec.samples())
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_labelme_export_is_accepted(shared_data):
    root = shared_data("labelme_coco", "data_dataset_coco")
    spec = CocoSpec(images=root, annotations=root / "annotations.json", name="labelme")
    samples = list(spec.samples())
    assert [s.key for s in samples] == [0, 1, 2]  # ids start at 0
    assert samples[0].file_name.startswith("JPEGImages/") and samples[0].image_path.is_file()
    assert sum(len(s.instances) for s in samples) == 12
    assert json.loads(spec.file_metadata()["coco_categories"])[0]["name"] == "_background_"


def test_spec_pickles_without_parsed_json(shared_data):
    import pickle

    spec = CocoSpec(images=shared_data("coco", "val2017"),
                    annotations=shared_data("coco", "annotations", "instances_val2017.json"))
    list(spec.samples())
    clone = pickle.loads(pickle.dumps(spec))
    assert clone._data is None and clone.name == spec.name and len(pickle.dumps(spec)) < 2000
    assert isinstance(Reject(source_id="a", stage="b", reason="c"), Reject)
