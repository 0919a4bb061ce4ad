"""cython_ops: Cython vs NumPy agreement, the spec's 640x480 statistics, mask targets, helpers, backend selection."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cython_ops
from cython_ops import (
    DEFAULT_SAMPLES_PER_GROUP,
    PatchSample,
    augment_position,
    patch_quota,
    reference,
    sample_mask_targets,
    sample_num_tokens,
    sample_patches,
)
from cython_ops._common import prepare_patches
from cython_ops._example import ellipse_mask, spec_example
from flip_core.gaussian import m_to_p, mask_moments, moments_to_position, position_n_to_p, position_to_covariance

SIZES = (1, 2, 4, 8, 16)


@pytest.fixture(scope="module")
def example():
    return spec_example()


def _same(a: PatchSample, b: PatchSample) -> bool:
    return all(
        len(x) == len(y) and all(np.array_equal(u, v) and u.dtype == v.dtype for u, v in zip(x, y))
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("convention", ["exact", "reference"])
@pytest.mark.parametrize("thr_cov", [(2.67, 1.44), (None, None), (0.0, 1.0)])
def test_patches_cython_matches_numpy_bit_for_bit(example, convention, thr_cov):
    image, _, position = example
    for seed in range(2):
        kw = dict(convention=convention)
        a = sample_patches(image, position, 512, SIZES, *thr_cov, np.random.default_rng(seed), backend="numpy", **kw)
        b = sample_patches(image, position, 512, SIZES, *thr_cov, np.random.default_rng(seed), backend="cython", **kw)
        assert _same(a, b)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_place_then_crop_is_sample_patches_and_regions_give_the_same_bytes(example, backend):
    """place_patches draws everything, crop_patches nothing: their composition is sample_patches, draw for draw, and
    cropping from any region covering ``placement.box`` gives the same bytes as from the whole image."""
    image, _, position = example
    for seed, thr_cov in [(0, (2.67, 1.44)), (1, (None, None)), (2, (0.0, 1.0))]:
        rng_whole, rng_split = np.random.default_rng(seed), np.random.default_rng(seed)
        whole = sample_patches(image, position, 300, SIZES, *thr_cov, rng_whole, backend=backend)
        placement = cython_ops.place_patches(image.shape[:2], position, 300, SIZES, *thr_cov, rng_split,
                                             backend=backend)
        assert rng_whole.random() == rng_split.random()  # the same number of draws
        assert _same(whole, cython_ops.crop_patches(image, placement, backend=backend))
        x0, y0, x1, y1 = placement.box
        # the box is exactly what the crops read: p + 1 pixels from floor(c - p/2 + 0.5)
        reads = [(np.floor(c - p / 2 + 0.5), np.floor(c - p / 2 + 0.5) + p + 1)
                 for p, cs in zip(SIZES, (m_to_p(c.astype(np.float64), 640, 480) for c in whole.coords)) for c in cs]
        lo, hi = np.min([r[0] for r in reads], axis=0), np.max([r[1] for r in reads], axis=0)
        assert np.all(np.abs(np.array([x0, y0]) - lo) <= 1) and np.all(np.abs(np.array([x1, y1]) - hi) <= 1)
        for ox, oy, right, bottom in [(x0, y0, x1, y1), (max(x0 - 7, 0), max(y0 - 3, 0), 640, y1 + 2)]:
            region = image[oy:bottom, ox:right]  # a column slice: rows strided, pixels contiguous
            assert _same(whole, cython_ops.crop_patches(region, placement, origin=(ox, oy), backend=backend))
            region = np.ascontiguousarray(region)
            assert _same(whole, cython_ops.crop_patches(region, placement, origin=(ox, oy), backend=backend))
        with pytest.raises(ValueError, match="does not cover the pixels the crops read"):
            cython_ops.crop_patches(np.ascontiguousarray(image[y0 + 1:y1, x0:x1]), placement, origin=(x0, y0 + 1),
                                    backend=backend)
        with pytest.raises(ValueError, match="does not cover"):
            cython_ops.crop_patches(np.ascontiguousarray(image[y0:y1, x0:x1 - 1]), placement, origin=(x0, y0),
                                    backend=backend)


def test_placement_cython_matches_numpy(example):
    image, _, position = example
    for seed in range(3):
        a = cython_ops.place_patches((480, 640), position, 512, SIZES, None, None, np.random.default_rng(seed),
                                     backend="numpy")
        b = cython_ops.place_patches((480, 640), position, 512, SIZES, None, None, np.random.default_rng(seed),
                                     backend="cython")
        assert a.counts == b.counts and a.box == b.box and a.params == b.params
        used = np.concatenate([np.arange(s, s + n) for s, n in zip(np.cumsum((0,) + a.params.quota[:-1]), a.counts)])
        assert np.array_equal(a.centres[used], b.centres[used]) and np.array_equal(a.coords[used], b.coords[used])
    empty = cython_ops.place_patches((480, 640), position, 1, (16,), 0.0, 1e-9, np.random.default_rng(0))
    assert empty.counts == (0,) and empty.box is None
    assert cython_ops.union_box([None, (3, 4, 10, 12), (1, 6, 8, 20), None]) == (1, 4, 10, 20)
    assert cython_ops.union_box([None]) is None
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\)"):
        cython_ops.place_patches(image, position, 512, SIZES, None, None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too small"):
        cython_ops.place_patches((17, 640), position, 512, SIZES, None, None, np.random.default_rng(0))
    with pytest.raises(TypeError, match="placement must come from cython_ops.place_patches"):
        cython_ops.crop_patches(image, (0, 1))


def test_patch_output_layout(example):
    image, _, position = example
    out = sample_patches(image, position, 512, SIZES, 2.67, 1.44, np.random.default_rng(3))
    start = 0
    for p, patches, coords, idx in zip(SIZES, *out):
        n = len(idx)
        assert patches.shape == (n, 3, p, p) and patches.dtype == np.uint8 and patches.flags.c_contiguous
        assert coords.shape == (n, 2) and coords.dtype == np.float32
        assert idx.dtype == np.int32 and np.array_equal(idx, np.arange(start, start + n))
        start += n
        xy = m_to_p(coords, 640, 480)  # strictly inside the image
        assert np.all(xy - p / 2 >= 0) and np.all(xy[:, 0] + p / 2 < 639) and np.all(xy[:, 1] + p / 2 < 479)


def test_patch_pixels_are_bilinear_crops(example):
    image, _, position = example
    out = sample_patches(image, position, 64, SIZES, 2.67, 1.44, np.random.default_rng(0))
    for p, patches, coords in zip(SIZES, out.patches, out.coords):
        for patch, c in zip(patches[:5], m_to_p(coords[:5], 640, 480)):
            bx, by = c - p / 2 + 0.5  # spec 3.3 step 5: sample point of pixel (0, 0)
            x0, y0 = int(np.floor(bx)), int(np.floor(by))
            dx, dy = bx - x0, by - y0
            f = image[y0:y0 + p + 1, x0:x0 + p + 1].astype(float)
            v = (1 - dx) * (1 - dy) * f[:-1, :-1] + dx * (1 - dy) * f[:-1, 1:] + (1 - dx) * dy * f[1:, :-1] \
                + dx * dy * f[1:, 1:]
            # coords are float32: allow 1 grey level
            assert np.abs(patch.transpose(1, 2, 0).astype(int) - np.round(v)).max() <= 1


def test_spec_example_quota_and_nominal_rule(example):
    """Spec 3.4: quota [0, 0, 234, 223, 55] and the nominal rule places all of them (the reference hash ~30 16px)."""
    image, _, position = example
    ref = prepare_patches(image.shape[:2], position, 512, SIZES, 2.67, 1.44, np.random.default_rng(0), "reference")
    assert ref.quota == (0, 0, 234, 223, 55)
    exact = prepare_patches(image.shape[:2], position, 512, SIZES, 2.67, 1.44, np.random.default_rng(0), "exact")
    assert exact.quota == (0, 0, 235, 222, 55)  # exact sigmas are 0.37% smaller (W/2 vs (W-1)/2 scaling)
    for convention, quota in (("reference", ref.quota), ("exact", exact.quota)):
        for seed in range(5):
            out = sample_patches(image, position, 512, SIZES, 2.67, 1.44, np.random.default_rng(seed),
                                 convention=convention)
            assert tuple(len(i) for i in out.indices) == quota


def test_patch_quota_rule():
    assert patch_quota(45 * 2**0.5, 17.5 * 2**0.5, 1.44, 512, SIZES) == (0, 0, 235, 222, 55)
    assert patch_quota(1.0, 1.0, 1.0, 512, SIZES) == (6, 1, 0, 0, 0)
    assert patch_quota(1e6, 1e6, 2.0, 512, SIZES) == (0, 0, 0, 0, 512)


def test_centre_covariance_is_twice_mask_covariance():
    """Exact convention: patch centres ~ N(mu, 2 Sigma_P), principal direction of the mask (spec 2.4, 3.1)."""
    mask = ellipse_mask(angle_deg=30.0)
    ys, xs = np.nonzero(mask)
    sigma_p = np.cov(np.stack([xs, ys]), bias=True)
    image = np.zeros((480, 640, 3), np.uint8)
    position = moments_to_position(mask_moments(mask))
    out = sample_patches(image, position, 20000, (1,), 1e9, 3.0, np.random.default_rng(0))
    xy = m_to_p(out.coords[0], 640, 480)
    assert len(xy) == 20000
    cov = np.cov(xy.T)
    np.testing.assert_allclose(cov, 2 * sigma_p, rtol=0.05, atol=0.05 * np.abs(2 * sigma_p).max())
    evals, evecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])) % 180
    assert abs(angle - 30.0) < 2.0
    np.testing.assert_allclose(np.sqrt(evals), np.sqrt(2) * np.array([17.5, 45.0]), rtol=0.04)
    # and it is the covariance flip_core.gaussian gives for the frame-P position
    pos_p = position_n_to_p(position, 640, 480)
    np.testing.assert_allclose(position_to_covariance(pos_p), sigma_p, rtol=1e-3)


# --------------------------------------------------------------------------------------------------------------
# mask targets
# --------------------------------------------------------------------------------------------------------------

def _brute_l1(inside: np.ndarray) -> np.ndarray:
    by, bx = np.nonzero(reference.boundary_pixels(inside))
    ys, xs = np.mgrid[0:inside.shape[0], 0:inside.shape[1]]
    if by.size == 0:
        return np.full(inside.shape, sum(inside.shape))
    return np.min(np.abs(ys[..., None] - by) + np.abs(xs[..., None] - bx), axis=-1)


@pytest.mark.parametrize("convention", ["exact", "reference"])
def test_mask_targets_cython_matches_numpy(example, convention):
    _, mask, position = example
    for seed in range(3):
        a = sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(seed),
                                convention=convention, backend="numpy")
        b = sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(seed),
                                convention=convention, backend="cython")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _blobs(seed: int, h: int, w: int) -> np.ndarray:
    """Union of a few random ellipses (holes and far-apart parts exercise distances > 64 inside and outside)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 5)):
        c = rng.uniform((0, 0), (w, h))
        mask |= ellipse_mask(w, h, rng.uniform(3, 0.6 * min(h, w), 2), rng.uniform(0, 180), centre=c)
    if rng.random() < 0.5:
        mask[rng.integers(0, h), :] ^= 1  # a thin line crossing everything
    return mask


@pytest.mark.parametrize("seed", range(12))
def test_mask_targets_cython_matches_numpy_on_blobs(seed):
    """Crops clipped by the border, several components, thick interiors (d > 64): still bit-identical."""
    mask = _blobs(seed, 240 + 7 * seed, 320 - 5 * seed)
    if not mask.any():
        mask[0, 0] = 1
    position = moments_to_position(mask_moments(mask))
    spg = DEFAULT_SAMPLES_PER_GROUP if seed % 2 else (1, 3, 0, 5, 0, 2, 9)
    a = sample_mask_targets(mask, position, spg, np.random.default_rng(seed), backend="numpy")
    b = sample_mask_targets(mask, position, spg, np.random.default_rng(seed), backend="cython")
    if a is None:
        assert b is None
    else:
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    image = np.random.default_rng(seed).integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    pa = sample_patches(image, position, 700, SIZES, None, None, np.random.default_rng(seed), backend="numpy")
    pb = sample_patches(image, position, 700, SIZES, None, None, np.random.default_rng(seed), backend="cython")
    assert _same(pa, pb)


def test_mask_targets_groups_and_labels(example):
    _, mask, position = example
    coords, labels = sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(0))
    assert coords.shape == (2048, 2) and coords.dtype == np.float32 and labels.dtype == np.uint8
    assert int(labels.sum()) == 1024
    xy = m_to_p(coords, 640, 480)
    pix = np.floor(xy + 0.5).astype(int)  # jitter is within +-0.5 px of the pixel centre
    assert np.all(np.abs(xy - pix) <= 0.5 + 1e-4)
    assert np.array_equal(mask[pix[:, 1], pix[:, 0]], labels)
    # exact (checked below); the crop border is far from the ellipse here, so the full-mask distance is the same
    dist = reference.boundary_distance(mask != 0)
    ends = [2, 4, 8, 16, 32, 64, 10**9]
    start = 0
    for g, n in enumerate(DEFAULT_SAMPLES_PER_GROUP):
        sl = slice(start, start + n)
        assert np.array_equal(labels[sl], np.r_[np.ones(n // 2), np.zeros(n - n // 2)])
        assert dist[pix[sl, 1], pix[sl, 0]].max() <= ends[g]
        start += n


def test_reference_distance_is_exact_l1():
    rng = np.random.default_rng(0)
    for _ in range(20):
        inside = rng.random((rng.integers(2, 30), rng.integers(2, 30))) < rng.uniform(0.05, 0.95)
        assert np.array_equal(reference.boundary_distance(inside), _brute_l1(inside))


def test_mask_targets_none_when_crop_is_uniform():
    position = np.array([0.0, 0.0, 0.05, 0.05, 0.0, 1.0], np.float32)
    full = np.ones((60, 80), np.uint8)
    far = np.zeros((60, 80), np.uint8)
    far[0:3, 0:3] = 1  # the 5-sigma crop around the centre holds no inside pixel
    for mask in (full, far):
        for backend in ("cython", "numpy"):
            assert sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(0),
                                       backend=backend) is None


def test_empty_group_fallback_order():
    sizes = np.array([0, 0, 0, 5, 5, 9, 9])
    assert reference._source_group(sizes, 0) == 3
    assert reference._source_group(sizes, 3) == 3
    assert reference._source_group(np.array([1, 1, 0, 0, 0, 0, 0]), 4) == 1


def test_mask_targets_bool_and_small_masks():
    mask = np.zeros((9, 7), bool)
    mask[3:6, 2:5] = True
    position = moments_to_position(mask_moments(mask))
    for backend in ("cython", "numpy"):
        coords, labels = sample_mask_targets(mask, position, (2, 0, 0, 0, 0, 0, 3), np.random.default_rng(1),
                                             backend=backend)
        assert coords.shape == (5, 2) and labels.tolist() == [1, 0, 1, 0, 0]


# --------------------------------------------------------------------------------------------------------------
# determinism, helpers, backend selection
# --------------------------------------------------------------------------------------------------------------

def _digest(seed: int) -> str:
    image, mask, position = spec_example()
    h = hashlib.sha256()
    rng = np.random.default_rng(seed)
    out = sample_patches(image, position, 512, SIZES, None, None, rng)
    for arrays in out:
        for a in arrays:
            h.update(a.tobytes())
    for a in sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, rng):
        h.update(a.tobytes())
    return h.hexdigest()


def test_deterministic_across_processes():
    code = textwrap.dedent(
        """
        from tests.test_cython_ops import _digest
        print(_digest(7))
        """
    )
    root = cython_ops.__file__.rsplit("/cython_ops/", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == _digest(7)
    assert _digest(8) != _digest(7)


def test_augment_position_statistics():
    position = np.array([0.1, -0.2, 0.05, 0.2, 0.6, 0.8], np.float32)
    a = augment_position(position, np.random.default_rng(0))
    assert a.dtype == np.float32 and a.shape == (6,)
    np.testing.assert_array_equal(a, augment_position(position, np.random.default_rng(0)))
    out = np.stack([augment_position(position, np.random.default_rng(s)) for s in range(2000)])
    np.testing.assert_allclose(np.hypot(out[:, 4], out[:, 5]), 1.0, rtol=1e-6)
    assert np.all(out[:, 2] >= 0.7 * 0.05) and np.all(out[:, 3] <= 1.31 * np.hypot(0.05, 0.2))
    # the centre jitter follows the prompt's own ellipse: larger along the major axis (b, a)
    d = out[:, :2] - position[:2]
    along_major = d @ np.array([0.8, 0.6])
    along_minor = d @ np.array([0.6, -0.8])
    np.testing.assert_allclose(along_major.std(), 0.1 * 0.2, rtol=0.08)
    np.testing.assert_allclose(along_minor.std(), 0.1 * 0.05, rtol=0.08)
    # rotation at most 20 deg * sigma_min / sigma_max
    ang = np.degrees(np.abs(np.arctan2(out[:, 5], out[:, 4]) - np.arctan2(0.8, 0.6)))
    assert ang.max() <= 20 * 0.05 / 0.2 + 1e-3


def test_sample_num_tokens():
    rng = np.random.default_rng(0)
    draws = np.array([sample_num_tokens(32, 2048, 512, rng) for _ in range(20000)])
    assert draws.min() >= 32 and draws.max() <= 2048
    assert abs(draws.mean() - 512) < 8 and 440 < np.median(draws) < 500
    high = np.array([sample_num_tokens(32, 2048, 1900, rng) for _ in range(5000)])  # beta < 1 (m > 2/3)
    assert abs(high.mean() - 1900) < 15
    assert sample_num_tokens(16, 16, 16, rng) == 16 and sample_num_tokens(16, 17, 16.7, rng) == 17
    assert sample_num_tokens(16, 100, 16, rng) == 16 and sample_num_tokens(16, 100, 100, rng) == 100
    for bad in [(0, 10, 5), (10, 5, 7), (5, 10, 11), (5, 10, float("nan")), (5.5, 10, 7)]:
        with pytest.raises(ValueError, match="tokens"):
            sample_num_tokens(*bad, rng)


def test_backend_selection(monkeypatch, example):
    image, mask, position = example
    assert cython_ops.resolve_backend() == "cython"
    monkeypatch.setenv("FLIP_OPS_BACKEND", "numpy")
    assert cython_ops.resolve_backend() == "numpy"
    assert cython_ops.resolve_backend("cython") == "cython"
    monkeypatch.setenv("FLIP_OPS_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FLIP_OPS_BACKEND"):
        sample_patches(image, position, 8, SIZES, 1.0, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="backend"):
        sample_patches(image, position, 8, SIZES, 1.0, 1.0, np.random.default_rng(0), backend="c")


def test_missing_extension_raises_clear_import_error(monkeypatch, example):
    image, mask, position = example
    monkeypatch.delitem(sys.modules, "cython_ops._cython_backend", raising=False)
    monkeypatch.delattr(cython_ops, "_cython_backend", raising=False)
    monkeypatch.delattr(cython_ops, "_kernels", raising=False)
    monkeypatch.setitem(sys.modules, "cython_ops._kernels", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install -e \."):
        sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(0), backend="cython")
    # the NumPy reference stays available, but only when asked for
    assert sample_mask_targets(mask, position, DEFAULT_SAMPLES_PER_GROUP, np.random.default_rng(0),
                               backend="numpy") is not None
