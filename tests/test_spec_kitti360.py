"""KITTI-360 spec on a format-exact fixture.

Format source: cvlibs.net/datasets/kitti-360/documentation.php ("2D Data Format": instance PNGs are single-channel
16-bit, ``semanticId*1000 + instanceId``) and kitti360Scripts ``helpers/labels.py`` / ``evaluation/semantic_2d/
instance.py`` (values < 1000 are a bare semanticId). No real KITTI-360 file is available here (SOURCES.md).
"""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image

from datasets_spec.kitti360 import KITTI360_LABELS, Kitti360Spec, split_id
from tests.common.spec_fixtures import KITTI_SEQ, kitti360_tree, masks_of, materialize, rejects_of


def test_label_table_matches_official_columns():
    by_name = {lab.name: lab for lab in KITTI360_LABELS}
    assert len(KITTI360_LABELS) == 45 and [lab.id for lab in KITTI360_LABELS] == list(range(45))
    assert by_name["car"].id == 26 and by_name["car"].has_instances and not by_name["car"].ignore_in_eval
    assert by_name["caravan"].ignore_in_eval and by_name["road"].has_instances is False
    assert sorted(lab.name for lab in KITTI360_LABELS if lab.has_instances and not lab.ignore_in_eval) == sorted(
        ["building", "pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train",
         "motorcycle", "bicycle", "garage", "smallpole", "lamp", "trash bin", "vending machine", "box"])
    assert split_id(26001) == (26, 1) and split_id(23) == (23, 0)


def test_instances_rejects_and_keys(tmp_path):
    frames = kitti360_tree(tmp_path)
    spec = pickle.loads(pickle.dumps(Kitti360Spec(root=tmp_path)))
    result = materialize(spec)
    by_frame = {s.metadata["frame"]: (s, items) for s, _, items in result.values()}
    assert sorted(by_frame) == [10, 11, 13]
    s10, items10 = by_frame[10]
    assert s10.key == 3 * 10**10 + 10
    assert s10.file_name == f"data_2d_raw/{KITTI_SEQ}/image_00/data_rect/0000000010.png"
    # things with instances: car 26001, car 26002, person 24001; building 11000 (instanceId 0) is also one segment.
    assert sorted((m.category_id, m.metadata["instance_id"]) for m in items10) == [(11, 0), (24, 1), (26, 1), (26, 2)]
    for m in items10:
        values = {(26, 1): 26001, (26, 2): 26002, (24, 1): 24001, (11, 0): 11000}
        value = values[(m.category_id, m.metadata["instance_id"])]
        assert np.array_equal(m.mask, frames["0000000010"] == value) and m.ignore is None
    assert [(r.source_id.rsplit("/", 1)[1], r.reason) for r in s10.rejects] == [("29001", "ignored_class")]
    s11, items11 = by_frame[11]
    assert [m.category_id for m in items11] == [26]
    assert [(r.source_id.rsplit("/", 1)[1], r.reason) for r in s11.rejects] == [("26", "no_instance_id"),
                                                                                 ("50003", "unknown_label")]
    # frame 13's label PNG is 42x64 for a 40x64 image: declared size is the label's, every instance is rejected.
    s13, items13 = by_frame[13]
    assert (s13.height, s13.width) == (42, 64)
    assert {r.reason for r in rejects_of(result)} == {"size_mismatch"} and len(items13) == 1
    rej = {r.source_id.rsplit("/", 1)[1]: r.reason for r in spec.enumeration_rejects()}
    assert rej == {"0000000012": "no_instances"}


def test_size_mismatch_and_options(tmp_path):
    kitti360_tree(tmp_path)
    spec = Kitti360Spec(root=tmp_path, include_stuff=True, keep_ignored_classes=True)
    samples = {s.metadata["frame"]: s for s in spec.samples()}
    assert sorted(samples) == [10, 11, 12, 13]
    # frame 13's label PNG is 2 rows taller than its image: every instance is rejected with size_mismatch.
    s13 = samples[13]
    items = spec.load_masks(s13, 40, 64)
    assert [r.reason for r in items] == ["size_mismatch"] * len(s13.instances)
    s10 = samples[10]
    masks = spec.load_masks(s10, 40, 64)
    labels = sorted(m.metadata["label"] for m in masks)
    assert labels == ["building", "car", "car", "caravan", "person", "road", "sky"]
    sky = next(m for m in masks if m.metadata["label"] == "sky")
    assert sky.mask[6:10].all() and sky.mask.sum() == 10 * 64 - 60  # building 11000 covers 6x10 of the sky rows


def test_frames_list_selects_frames(tmp_path):
    kitti360_tree(tmp_path)
    lst = tmp_path / "data_2d_semantics" / "train" / "2013_05_28_drive_val_frames.txt"
    lst.write_text(f"data_2d_raw/{KITTI_SEQ}/image_00/data_rect/0000000011.png "
                   f"data_2d_semantics/train/{KITTI_SEQ}/image_00/semantic/0000000011.png\n")
    spec = Kitti360Spec(root=tmp_path, frames_list=lst)
    assert [s.metadata["frame"] for s in spec.samples()] == [11]
    assert len(masks_of(materialize(spec))) == 1


def test_enumeration_is_fresh_after_source_changes(tmp_path):
    frames = kitti360_tree(tmp_path)
    spec = Kitti360Spec(root=tmp_path)
    assert len(list(spec.samples())) == 3 and len(spec.enumeration_rejects()) == 1  # reuses the scan
    inst = tmp_path / "data_2d_semantics" / "train" / KITTI_SEQ / "image_00" / "instance"
    Image.fromarray(frames["0000000011"]).save(inst / "0000000014.png")
    (tmp_path / "data_2d_raw" / KITTI_SEQ / "image_00" / "data_rect" / "0000000014.png").write_bytes(
        (tmp_path / "data_2d_raw" / KITTI_SEQ / "image_00" / "data_rect" / "0000000011.png").read_bytes())
    assert len(list(Kitti360Spec(root=tmp_path).samples())) == 4  # an equal spec value scans again
