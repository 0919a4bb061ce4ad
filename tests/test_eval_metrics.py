"""Metrics, clicker, baseline and click adapter on hand-built masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from flip_core.eval.adapter import ClickAdapterConfig, ClickPromptAdapter, click_region, clip_moments
from flip_core.eval.baseline import choose_radius, ellipse_mask, instance_fold, radius_iou_curve
from flip_core.eval.clicker import Click, Clicker, next_click, padded_distance
from flip_core.eval.metrics import iou, miou_at_k, noc_nof, noc_per_instance, size_bucket
from flip_core.eval.predictors import EllipsePredictor
from flip_core.eval.protocols import click_protocol_instance, flip_protocol_instance
from flip_core.gaussian import mask_moments


def _block(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------- IoU
def test_iou_known_values():
    gt = _block((4, 4), 0, 2, 0, 2)  # 4 px
    pred = _block((4, 4), 0, 2, 0, 4)  # 8 px, contains gt
    assert iou(pred, gt) == pytest.approx(4 / 8)
    assert iou(gt, gt) == 1.0
    assert iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 0.0  # empty union -> 0 (FLIP rule)
    ignore = _block((4, 4), 0, 4, 3, 4)  # ignore column 3: pred now has 6 counted px
    assert iou(pred, gt, ignore) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="same shape"):
        iou(pred, gt[:3])


# ---------------------------------------------------------------- NoC / NoF / mIoU
def test_noc_nof_miou_known_values():
    ious = np.array(
        [
            [0.50, 0.86, 0.91, 0.96] + [0.97] * 16,  # NoC85=2, NoC90=3, NoC95=4
            [0.90] * 20,  # NoC85=1, NoC90=1, NoC95=20 (never)
            [0.10] * 19 + [0.99],  # reaches everything exactly at click 20 -> NoC 20, counts as NoF
        ]
    )
    assert noc_per_instance(ious, 0.85).tolist() == [2, 1, 20]
    noc, nof = noc_nof(ious, (0.85, 0.90, 0.95))
    assert noc[0.85] == pytest.approx((2 + 1 + 20) / 3)
    assert noc[0.90] == pytest.approx((3 + 1 + 20) / 3)
    assert noc[0.95] == pytest.approx((4 + 20 + 20) / 3)
    assert nof == {0.85: 1, 0.90: 1, 0.95: 2}
    curve = miou_at_k(ious)
    assert curve.shape == (20,)
    assert curve[0] == pytest.approx((0.5 + 0.9 + 0.1) / 3)
    assert curve[4] == pytest.approx((0.97 + 0.9 + 0.1) / 3)  # 5-mIoU
    # ragged rows (early stop) are fine for NoC
    assert noc_per_instance([[0.2, 0.9], [0.95]], 0.9, max_clicks=20).tolist() == [2, 1]
    with pytest.raises(ValueError):
        miou_at_k(np.zeros((0, 20)))


def test_size_buckets():
    assert size_bucket([0.0, 0.0005, 0.001, 0.005, 0.05, 0.1, 1.0]).tolist() == [
        "<0.1%", "<0.1%", "0.1-1%", "0.1-1%", "1-10%", ">10%", ">10%"]


# ---------------------------------------------------------------- clicker
def test_distance_transform_matches_brute_force():
    rng = np.random.default_rng(0)
    m = rng.random((9, 11)) < 0.7
    dt = padded_distance(m)
    zeros = [(y, x) for y in range(-1, 10) for x in range(-1, 12) if not (0 <= y < 9 and 0 <= x < 11) or not m[y, x]]
    zy, zx = np.array(zeros).T
    for y in range(9):
        for x in range(11):
            want = np.sqrt(((zy - y) ** 2 + (zx - x) ** 2).min()) if m[y, x] else 0.0
            assert dt[y, x] == pytest.approx(want)


def test_first_click_at_object_centre():
    gt = _block((5, 5), 1, 4, 1, 4)
    c = next_click(np.zeros_like(gt), gt, None, np.ones_like(gt))
    assert c == Click(True, 2, 2)


def test_border_counts_as_boundary_and_row_major_tie_break():
    gt = np.ones((4, 6), dtype=bool)  # whole image: distances 1 at the border, 2 inside; first max is (1, 1)
    assert next_click(np.zeros_like(gt), gt, None, np.ones_like(gt)) == Click(True, 1, 1)


def test_negative_click_in_false_positive_region():
    gt = _block((7, 7), 1, 4, 1, 4)
    pred = gt | _block((7, 7), 4, 7, 4, 7)  # FP 3x3 block in the bottom-right corner, touching the border
    assert next_click(pred, gt, None, np.ones_like(gt)) == Click(False, 5, 5)


def test_tie_gives_negative_click():
    gt = _block((5, 5), 0, 1, 0, 1)  # FN single pixel (0,0): DT 1
    pred = _block((5, 5), 4, 5, 4, 5)  # FP single pixel (4,4): DT 1
    assert next_click(pred, gt, None, np.ones_like(gt)) == Click(False, 4, 4)


def test_clicked_pixels_are_excluded_and_ignore_respected():
    gt = _block((5, 5), 1, 4, 1, 4)
    clicker = Clicker(gt)
    empty = np.zeros_like(gt)
    assert clicker.make_next_click(empty) == Click(True, 2, 2)
    assert clicker.make_next_click(empty) == Click(True, 1, 1)  # (2,2) is clicked; all others have DT 1
    # ignoring the object's top row moves the FN region's centre: rows 2-3 remain, DT max 1 at (2, 1)
    ignore = _block((5, 5), 1, 2, 0, 5)
    assert next_click(empty, gt, ignore, np.ones_like(gt)) == Click(True, 2, 1)


# ---------------------------------------------------------------- baseline
def test_ellipse_baseline_recovers_a_disk_at_radius_two():
    h, w = 61, 81
    yy, xx = np.mgrid[:h, :w]
    gt = (xx - 40) ** 2 + (yy - 30) ** 2 <= 20**2
    m = mask_moments(gt)
    assert iou(ellipse_mask(m, h, w, 2.0), gt) > 0.97
    radii = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
    curve = radius_iou_curve(m, gt, None, radii)
    for r, v in zip(radii, curve):
        assert v == pytest.approx(iou(ellipse_mask(m, h, w, r), gt))
    best, _, n = choose_radius([(m, gt, None)], tuple(radii))
    assert best == 2.0 and n == 1


def test_instance_fold_is_seeded_and_balanced():
    folds = [instance_fold(f"coco/shard-0/{i}", seed=0) for i in range(400)]
    assert folds == [instance_fold(f"coco/shard-0/{i}", seed=0) for i in range(400)]
    assert 150 < sum(folds) < 250
    assert folds != [instance_fold(f"coco/shard-0/{i}", seed=1) for i in range(400)]


# ---------------------------------------------------------------- adapter + protocols
def test_clip_moments_floor_in_pixels():
    m = clip_moments(np.array([0, 0, 0, 0, 0], np.float32), 101, 201, 2.0)
    assert m[2] * 100**2 == pytest.approx(4.0, rel=1e-4) and m[3] * 50**2 == pytest.approx(4.0, rel=1e-4)


def test_click_region_rules():
    mask = _block((20, 20), 2, 10, 2, 10) | _block((20, 20), 14, 18, 14, 18)
    clicks = [Click(True, 5, 5), Click(False, 16, 16), Click(False, 9, 9)]
    r = click_region(mask, clicks, 1.0)
    assert not r[14:18, 14:18].any()  # component with only a negative click dropped
    assert r[5, 5] and r[3, 3] and not r[9, 9]  # Voronoi split near the negative click inside the object
    assert click_region(mask, [Click(False, 16, 16)], 1.0).sum() == 0  # no positive click: everything nearer a negative


def test_protocols_with_ellipse_are_deterministic():
    h, w = 48, 64
    yy, xx = np.mgrid[:h, :w]
    gt = ((xx - 30) / 14.0) ** 2 + ((yy - 20) / 9.0) ** 2 <= 1
    image = np.zeros((h, w, 3), np.uint8)
    pred = EllipsePredictor(radius=2.0)
    row = flip_protocol_instance(pred, image, gt, None, mask_moments(gt), np.random.default_rng(0))
    assert row["iou"] > 0.9 and row["num_tokens"] == 0
    adapter = ClickPromptAdapter(pred, ClickAdapterConfig())
    a = click_protocol_instance(adapter, image, gt, None, np.random.default_rng(0), max_clicks=5)
    b = click_protocol_instance(adapter, image, gt, None, np.random.default_rng(0), max_clicks=5)
    a.pop("total_ms"), b.pop("total_ms")
    assert a == b
    assert len(a["ious"]) == 5 and a["click_positive"][0] and (a["click_y"][0], a["click_x"][0]) == (20, 30)
    early = click_protocol_instance(adapter, image, gt, None, np.random.default_rng(0), max_clicks=5, target_iou=0.0)
    assert len(early["ious"]) == 1
