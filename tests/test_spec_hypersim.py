"""Hypersim spec: a frame rebuilt from the real fragments in ../shared/data/hypersim, plus synthetic bad frames.

No real ``frame.IIII.semantic_instance.hdf5`` exists here (SOURCES.md section 7), so the fixture rebuilds one: the
real colour preview ``_frame.0000.semantic_instance.png`` is inverted through the real palette
``_detail/mesh/metadata_semantic_instance_colors.hdf5`` (row index = instance id, black = -1), and the semantic
preview through ``metadata_semantic_colors.hdf5`` (row = NYU40 id). The container follows the real
``frame.0000.depth_meters.hdf5``: one dataset named ``dataset`` (apple/ml-hypersim README "Dataset format").
See ``tests.common.spec_fixtures.hypersim_real_frame``.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from datasets_spec.base import RecordError, SpecError
from datasets_spec.hypersim import HypersimSpec, tonemap_hypersim
from tests.common.spec_fixtures import hypersim_frame, hypersim_real_frame, masks_of, materialize, rejects_of

SCENE = ("examples", "01_marketplace_dataset", "scenes", "ai_001_001")


@pytest.fixture
def real_frame(shared_data, tmp_path):
    ids, sem = hypersim_real_frame(shared_data("hypersim", *SCENE), tmp_path)
    return tmp_path, ids, sem


def test_real_frame_instances_and_categories(real_frame):
    root, ids, sem = real_frame
    spec = pickle.loads(pickle.dumps(HypersimSpec(root=root, min_pixels=16)))
    result = materialize(spec)
    ((sample, rgb, items),) = result.values()
    assert rgb.shape == (768, 1024, 3) and sample.key == 1 * 10**9 + 1 * 10**6 + 0 * 10**4 + 0
    present = [int(v) for v in np.unique(ids) if v >= 0]
    assert len(present) == 30 and [s.payload for s in sample.instances] == present
    counts = {v: int((ids == v).sum()) for v in present}
    small = sorted(v for v, c in counts.items() if c < 16)
    assert sorted(int(r.source_id.rsplit("/", 1)[1]) for r in rejects_of(result)) == small
    assert {r.reason for r in rejects_of(result)} <= {"too_small"}
    for m in masks_of(result):
        v = m.metadata["instance_id"]
        assert np.array_equal(m.mask, ids == v)
        labels, n = np.unique(sem[(ids == v) & (sem != -1)], return_counts=True)
        assert m.category_id == labels[np.argmax(n)] and 1 <= m.category_id <= 40
    assert len(masks_of(result)) == 30 - len(small)


def test_render_entity_source_and_min_pixels(real_frame):
    root, ids, _ = real_frame
    spec = HypersimSpec(root=root, instance_source="render_entity_id", min_pixels=10**9)
    result = materialize(spec)
    assert len(rejects_of(result)) == 30 and {r.reason for r in rejects_of(result)} == {"too_small"}
    with pytest.raises(ValueError, match="instance_source"):
        HypersimSpec(root=root, instance_source="bogus")


def test_bad_frames(tmp_path):
    good = np.full((12, 16), -1, np.int64)
    good[2:8, 2:8] = 5
    good[0, 0] = -7  # unknown id
    hypersim_frame(tmp_path, "ai_002_003", "cam_01", 4, good)
    hypersim_frame(tmp_path, "ai_002_003", "cam_01", 5, np.zeros((2, 12, 16), np.int64))  # not 2-D
    hypersim_frame(tmp_path, "ai_002_003", "cam_01", 6, np.ones((12, 16), np.int64))
    geo = tmp_path / "ai_002_003/images/scene_cam_01_geometry_hdf5"
    with h5py.File(geo / "frame.0006.semantic_instance.hdf5", "w") as f:
        f.create_dataset("dataset", data=np.ones((10, 16), np.int32))  # wrong size for its 12x16 image
    spec = HypersimSpec(root=tmp_path)
    result = materialize(spec)
    by_frame = {s.metadata["frame"]: (s, items) for s, _, items in result.values()}
    s4, items4 = by_frame[4]
    assert s4.key == 2 * 10**9 + 3 * 10**6 + 1 * 10**4 + 4
    assert [m.category_id for m in items4] == [-1]  # no semantic.hdf5 -> -1
    assert [(r.source_id.rsplit("/", 1)[1], r.reason) for r in s4.rejects] == [("-7", "unknown_label")]
    assert [r.reason for r in by_frame[6][1]] == ["size_mismatch"]
    assert {r.source_id.rsplit("/", 1)[1]: r.reason for r in spec.enumeration_rejects()} == {"0005": "bad_shape"}
    with pytest.raises(SpecError, match="no ai_"):
        list(HypersimSpec(root=tmp_path / "ai_002_003").samples())


def test_semantic_labels_unlabelled_and_unknown(tmp_path):
    ids = np.full((10, 10), -1, np.int64)
    ids[0:4, 0:4] = 1
    ids[5:9, 5:9] = 2
    ids[0:3, 6:9] = 3
    sem = np.full((10, 10), -1, np.int64)
    sem[0:4, 0:2] = 5  # instance 1: half labelled 5, half -1 -> category 5
    sem[5:9, 5:9] = 99  # instance 2: not a NYU40 id -> unknown_label
    hypersim_frame(tmp_path, "ai_001_001", "cam_00", 0, ids, semantic=sem)  # instance 3 all -1 -> category -1
    items = HypersimSpec(root=tmp_path, min_pixels=1).load_masks(next(HypersimSpec(root=tmp_path).samples()), 10, 10)
    assert [getattr(i, "category_id", None) for i in items] == [5, None, -1]
    assert items[1].reason == "unknown_label" and "99" in items[1].message


def test_color_hdf5_tonemap(tmp_path):
    ids = np.full((8, 10), 3, np.int64)
    ids[0] = -1
    hdr = np.random.default_rng(0).uniform(0, 5, (8, 10, 3))
    hypersim_frame(tmp_path, "ai_001_002", "cam_00", 0, ids, hdr=hdr)
    spec = HypersimSpec(root=tmp_path, image_source="color_hdf5", min_pixels=1)
    (sample,) = spec.samples()
    rgb = spec.load_image(sample)
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 10, 3)
    # toolkit formula: 90th percentile of valid-pixel brightness maps to 0.8 after gamma.
    h = hdr.astype(np.float16).astype(np.float32)
    b = 0.3 * h[..., 0] + 0.59 * h[..., 1] + 0.11 * h[..., 2]
    scale = 0.8 ** 2.2 / np.percentile(b[1:], 90)
    expected = (np.clip((scale * h) ** (1 / 2.2), 0, 1) * 255).astype(np.uint8)
    assert np.abs(rgb.astype(int) - expected).max() <= 1
    assert np.array_equal(tonemap_hypersim(np.zeros((2, 2, 3)), None), np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "ai_001_002/images/scene_cam_00_final_hdf5/frame.0000.color.hdf5").unlink()
    with pytest.raises(RecordError, match="does not exist"):
        spec.load_image(sample)
