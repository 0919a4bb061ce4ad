"""Helpers shared by the spec modules (datasets_spec._common)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datasets_spec._common import id_map_instances, read_image_file, resize_mask_area, resize_mask_nearest, split_scan
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample


def _full_resize_values(mask, h, w):
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR))


def test_resize_mask_area_equals_whole_image_resize_except_exact_halves():
    rng = np.random.default_rng(0)
    for _ in range(200):
        H, W = (int(v) for v in rng.integers(20, 300, 2))
        h, w = (int(v) for v in rng.integers(5, 400, 2))
        m = np.zeros((H, W), bool)
        y, x = rng.integers(0, H), rng.integers(0, W)
        m[y: y + rng.integers(1, 60), x: x + rng.integers(1, 60)] = True
        if rng.random() < 0.5:
            m &= rng.random((H, W)) < 0.7
        v = _full_resize_values(m, h, w).astype(int)
        got = resize_mask_area(m, h, w)
        differ = got != (v >= 128)
        assert not (differ & ~np.isin(v, (127, 128))).any()
    assert not resize_mask_area(np.zeros((10, 10), bool), 4, 4).any()


def test_resize_mask_nearest_upscales_blocks():
    m = np.array([[1, 0], [0, 1]], bool)
    assert np.array_equal(resize_mask_nearest(m, 4, 4), np.kron(m, np.ones((2, 2), bool)))


def test_read_image_file_keeps_jpeg_bytes_decodes_others(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    assert np.array_equal(read_image_file(tmp_path / "a.bmp", source_id="x"), rgb)
    assert read_image_file(tmp_path / "a.jpg", source_id="x") == (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for name, reason in (("missing.png", "missing_file"), ("bad.png", "unreadable")):
        with pytest.raises(RecordError, match=name) as exc:
            read_image_file(tmp_path / name, source_id="x")
        assert exc.value.reason == reason


def test_id_map_instances_and_split_scan():
    ids = np.array([[1, 1, 2], [3, 3, 3]])
    srcs = [InstanceSource(source_id=f"s/{v}", payload=v) for v in (1, 2, 3, 9)]
    items = id_map_instances(ids, srcs, height=2, width=3, what="f", min_pixels=2)
    assert [type(i).__name__ for i in items] == ["InstanceMask", "Reject", "InstanceMask", "Reject"]
    assert [i.reason for i in items if isinstance(i, Reject)] == ["too_small", "empty_mask"]
    assert isinstance(items[0], InstanceMask) and items[0].mask.sum() == 2
    assert [i.reason for i in id_map_instances(ids, srcs[:1], height=3, width=3, what="f")] == ["size_mismatch"]
    empty = Sample(key=1, source_id="img/1", file_name="1.jpg",
                   rejects=(Reject(source_id="a", stage="enumerate", reason="unknown_label"),))
    full = Sample(key=2, source_id="img/2", file_name="2.jpg", instances=tuple(srcs[:1]))
    samples, rejects = split_scan([empty, full, Reject(source_id="b", stage="enumerate", reason="x")])
    assert samples == [full] and [r.reason for r in rejects] == ["unknown_label", "no_instances", "x"]


def test_present_values_matches_unique():
    from datasets_spec._common import present_values

    rng = np.random.default_rng(3)
    for arr in (rng.integers(-1, 40, (30, 20)), rng.integers(0, 60000, (50, 50)).astype(np.uint16),
                np.array([[-(2**40), 5]]), np.zeros((0, 3), np.int32), np.array([[255, 0]], np.uint8)):
        assert present_values(arr) == [int(v) for v in np.unique(arr)]
