"""Gaussian math: moments (spec 1.2) against an independent float64 computation, bbox, crops, 6-vector."""

from __future__ import annotations

import numpy as np
import pytest

from flip_core.gaussian import mask_bbox, mask_moments, moments_to_position, position_to_covariance


def _reference_moments(mask: np.ndarray) -> np.ndarray:
    """Spec 1.2 written out with full grids in float64 (independent of the vectorised implementation)."""
    h, w = mask.shape
    m = (mask > 0.5).astype(np.float64)
    x, y = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
    s = max(m.sum(), 1e-16)
    mx, my = (m * x).sum() / s, (m * y).sum() / s
    return np.array(
        [mx, my, (m * x * x).sum() / s - mx**2, (m * y * y).sum() / s - my**2, (m * x * y).sum() / s - mx * my]
    )


@pytest.mark.parametrize("seed", range(5))
def test_moments_match_independent_float64(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 80, size=2)
    mask = rng.random((h, w)) < rng.random()
    got = mask_moments(mask)
    assert got.dtype == np.float32 and got.shape == (5,)
    np.testing.assert_allclose(got, _reference_moments(mask), atol=1e-6)


def test_full_mask_variance_is_about_one_third():
    got = mask_moments(np.ones((200, 300)))
    np.testing.assert_allclose(got[:2], 0, atol=1e-7)
    np.testing.assert_allclose(got[2:4], 1 / 3, atol=0.01)


def test_crop_with_origin_equals_full_mask():
    rng = np.random.default_rng(3)
    full = np.zeros((50, 70), bool)
    full[10:30, 20:45] = rng.random((20, 25)) < 0.6
    x0, y0, x1, y1 = mask_bbox(full).astype(int)
    crop = full[y0 : y1 + 1, x0 : x1 + 1]
    np.testing.assert_allclose(
        mask_moments(crop, origin=(y0, x0), image_shape=full.shape), mask_moments(full), rtol=0, atol=1e-7
    )
    with pytest.raises(ValueError, match="does not fit"):
        mask_moments(crop, origin=(45, 0), image_shape=full.shape)


def test_bbox_counts_row_and_column_zero():
    m = np.zeros((10, 10))
    m[0, 0:3] = 1
    np.testing.assert_array_equal(mask_bbox(m), [0, 0, 2, 0])
    with pytest.raises(ValueError, match="no pixel"):
        mask_bbox(np.zeros((4, 4)))


def test_moments_to_position_round_trips_covariance():
    rng = np.random.default_rng(4)
    for _ in range(20):
        mask = np.zeros((60, 80), bool)
        y0, x0 = rng.integers(0, 30), rng.integers(0, 40)
        mask[y0 : y0 + rng.integers(2, 30), x0 : x0 + rng.integers(2, 40)] = True
        mom = mask_moments(mask).astype(np.float64)
        cov = position_to_covariance(moments_to_position(mom))
        np.testing.assert_allclose(cov, [[mom[2], mom[4]], [mom[4], mom[3]]], atol=1e-6)


@pytest.mark.parametrize("convention", ["exact", "reference"])
@pytest.mark.parametrize("size", [(640, 480), (17, 1000), (2, 2)])
def test_single_position_fast_path_is_bit_identical_to_array_path(convention, size):
    """One (6,) position takes a Python-float path (the loader's hot path); it must equal the batched result."""
    from flip_core.gaussian import position_n_to_m, position_n_to_p

    rng = np.random.default_rng(3)
    n = 2000
    pos = np.concatenate([rng.uniform(-1.2, 1.2, (n, 2)), rng.uniform(1e-4, 1.0, (n, 2)), rng.normal(size=(n, 2))], 1)
    pos[:50, 3] = pos[:50, 2]  # isotropic: the degenerate eigenvector branch
    pos[50:100, 4] = 0.0
    pos[100:150, 5] = 0.0
    pos[150:200, 4:] = 0.0  # zero rotation vector: norm clamp
    w, h = size
    for batch, single in ((position_n_to_p, position_n_to_p), (position_n_to_m, position_n_to_m)):
        expected = batch(pos, w, h, convention)
        got = np.stack([single(p, w, h, convention) for p in pos])
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.stack([single(p, w, h, convention) for p in pos.astype(np.float32)]),
                                      batch(pos.astype(np.float32), w, h, convention))
