"""SA-1B spec on format-exact fixtures: tar files of ``sa_{id}.jpg`` + ``sa_{id}.json`` with pycocotools RLE.

Format source: facebookresearch/segment-anything README, "Dataset" (per-image JSON: ``image`` {image_id, width,
height, file_name} and ``annotations`` [{id, segmentation: COCO RLE {size, counts}, bbox, area, predicted_iou,
stability_score, crop_box, point_coords}]); the download is ``sa_NNNNNN.tar`` files. No real SA-1B file is here.
"""

from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest

from datasets_spec.base import RecordError, SpecError
from datasets_spec.sa1b import SA1BSpec, bucket_of
from tests.common.spec_fixtures import masks_of, materialize, rejects_of, sa1b_members, write_tar


def _tar_tree(root):
    members, truth = {}, {}
    for image_id, (h, w) in {1: (60, 90), 2: (80, 60), 3: (64, 64)}.items():
        jpg, js, masks = sa1b_members(image_id, h, w, n_masks=image_id + 1)
        members[f"sa_{image_id}.jpg"] = jpg
        members[f"sa_{image_id}.json"] = js
        truth[image_id] = masks
    write_tar(root / "sa_000000.tar", members)
    return truth


def test_bucket_formula():
    # SA-1B's typical 1500x2250 (2:3): 2250 * 352 / 1500 = 528 = 16.5 * 32 -> 17 * 32 = 544, which is the reference's
    # "very common 352x544 bucket" (flip-spec 1.4).
    assert bucket_of(1500, 2250) == (544, 352)
    assert bucket_of(2250, 1500) == (352, 544)
    assert bucket_of(1000, 1000) == (352, 352)
    assert bucket_of(3000, 1070) == (352, 992)
    with pytest.raises(ValueError):
        bucket_of(0, 10)


def test_tar_instances_match_rles(tmp_path):
    truth = _tar_tree(tmp_path)
    spec = pickle.loads(pickle.dumps(SA1BSpec(root=tmp_path)))
    result = materialize(spec)
    assert sorted(s.key for s, _, _ in result.values()) == [1, 2, 3]
    assert spec.enumeration_rejects() == [] and not rejects_of(result)
    for sample, rgb, items in result.values():
        assert isinstance(spec.load_image(sample), bytes)  # JPEG kept as stored
        assert len(items) == len(truth[sample.key]) == sample.key + 1
        for m, t in zip(items, truth[sample.key]):
            assert np.array_equal(m.mask, t) and m.category_id == -1 and m.metadata["area"] == int(t.sum())


def test_truncated_tar_member_and_bad_json(tmp_path):
    _tar_tree(tmp_path)
    path = tmp_path / "sa_000000.tar"
    with tarfile.open(path) as tf:
        last = tf.getmembers()[-1]
    # Cut the archive inside the last member's data: that member is reported, earlier ones survive.
    path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])
    jpg, _, _ = sa1b_members(9, 20, 20)
    write_tar(tmp_path / "sa_000001.tar", {"sa_9.jpg": jpg, "sa_9.json": b"{not json", "sa_10.jpg": jpg})
    spec = SA1BSpec(root=tmp_path)
    keys = sorted(s.key for s in spec.samples())
    reasons = sorted(r.reason for r in spec.enumeration_rejects())
    assert "truncated" in reasons and "malformed_json" in reasons and "missing_file" in reasons
    assert keys == [1, 2] and 9 not in keys  # sa_3.json (the last member) was cut
    trunc = next(r for r in spec.enumeration_rejects() if r.reason == "truncated")
    assert "sa_000000.tar" in trunc.message


def test_extracted_folder_and_size_mismatch(tmp_path):
    jpg, js, masks = sa1b_members(5, 40, 50)
    doc = json.loads(js)
    doc["annotations"][1]["segmentation"]["size"] = [41, 50]
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "sa_5.jpg").write_bytes(jpg)
    (tmp_path / "part" / "sa_5.json").write_text(json.dumps(doc))
    spec = SA1BSpec(root=tmp_path)
    result = materialize(spec)
    ((sample, _, items),) = result.values()
    assert sample.file_name == "sa_5.jpg" and np.array_equal(items[0].mask, masks[0])
    assert items[1].reason == "size_mismatch"
    (tmp_path / "part" / "sa_5.jpg").unlink()
    with pytest.raises(RecordError) as exc:
        spec.load_image(sample)
    assert exc.value.reason == "missing_file"
    with pytest.raises(SpecError, match="not found"):
        list(SA1BSpec(root=tmp_path, tars=("sa_999999.tar",)).samples())


def test_buckets_resize_images_and_masks(tmp_path):
    truth = _tar_tree(tmp_path)
    spec = SA1BSpec(root=tmp_path, bucketing=True)
    buckets = spec.buckets()
    # (H x W) 60x90 -> 352 x 528 -> 352x544; 80x60 -> 469.3 x 352 -> 480x352; 64x64 -> 352x352.
    assert list(buckets) == ["352x352", "352x544", "480x352"]
    b = pickle.loads(pickle.dumps(buckets["352x544"]))
    assert b.name == "sa1b-352x544"
    result = materialize(b)
    ((sample, rgb, items),) = result.values()
    assert sample.key == 1 and rgb.shape == (352, 544, 3)
    for m, t in zip(items, truth[1]):
        assert m.mask.shape == (352, 544)
        # area is preserved up to the boundary resampling.
        assert abs(m.mask.mean() - t.mean()) < 0.02
    assert sum(len(list(x.samples())) for x in buckets.values()) == 3
    assert sum(len(x.enumeration_rejects()) for x in buckets.values()) == 0
    with pytest.raises(SpecError, match="buckets"):
        list(spec.samples())  # a bucketing spec is never converted whole
    assert len(masks_of(materialize(buckets["480x352"]))) == 3
