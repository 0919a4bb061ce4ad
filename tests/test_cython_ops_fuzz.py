"""cython_ops wrappers under bad and random input (hypothesis; never a crash) and the GIL release."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cython_ops import DEFAULT_SAMPLES_PER_GROUP, sample_mask_targets, sample_patches
from cython_ops._example import spec_example

SIZES = (1, 2, 4, 8, 16)
GOOD_POS = np.array([0.0, 0.0, 0.2, 0.3, 0.6, 0.8], np.float32)
IMG = np.zeros((40, 50, 3), np.uint8)
MASK = np.zeros((40, 50), np.uint8)
MASK[10:30, 15:35] = 1


def _rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image=IMG.astype(np.float32)), "image"),
        (dict(image=IMG[..., 0]), "image"),
        (dict(image=np.zeros((40, 50, 4), np.uint8)), "image"),
        (dict(image=IMG[:, ::2]), "image"),
        (dict(image=IMG.tolist()), "image"),
        (dict(image=np.zeros((10, 50, 3), np.uint8)), "image"),
        (dict(position=GOOD_POS[:5]), "position"),
        (dict(position=np.r_[GOOD_POS[:5], np.nan]), "position"),
        (dict(position=np.r_[0, 0, np.inf, 1, 1, 0]), "position"),
        (dict(position=np.r_[0, 0, 0.0, 1, 1, 0]), "position sigmas"),
        (dict(position=np.r_[0, 0, -0.1, 1, 1, 0]), "position sigmas"),
        (dict(position=np.r_[0, 0, 0.1, 0.1, 0, 0]), "rot_a, rot_b"),
        (dict(position="abc"), "position"),
        (dict(num_tokens=0), "num_tokens"),
        (dict(num_tokens=1.5), "num_tokens"),
        (dict(num_tokens=True), "num_tokens"),
        (dict(patch_sizes=(2, 1)), "patch_sizes"),
        (dict(patch_sizes=(1, 3)), "patch_sizes"),
        (dict(patch_sizes=()), "patch_sizes"),
        (dict(patch_sizes=(1, 1)), "patch_sizes"),
        (dict(patch_sizes=(0, 1)), "patch_sizes"),
        (dict(patch_sizes=(512,)), "patch_sizes"),
        (dict(patch_sizes=5), "patch_sizes"),
        (dict(overlap_threshold=-1.0), "overlap_threshold"),
        (dict(overlap_threshold=float("nan")), "overlap_threshold"),
        (dict(coverage=0.0), "coverage"),
        (dict(coverage=None), "coverage"),
        (dict(convention="pixel"), "convention"),
    ],
)
def test_sample_patches_rejects_bad_input(kwargs, name):
    args = dict(image=IMG, position=GOOD_POS, num_tokens=16, patch_sizes=SIZES, overlap_threshold=1.0,
                coverage=1.0, rng=_rng())
    args.update(kwargs)
    for backend in ("cython", "numpy"):
        with pytest.raises(ValueError, match=name.split()[0]):
            sample_patches(**args, backend=backend)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        sample_patches(IMG, GOOD_POS, 16, SIZES, 1.0, 1.0, np.random.RandomState(0))
    with pytest.raises(TypeError, match="Generator"):
        sample_mask_targets(MASK, GOOD_POS, DEFAULT_SAMPLES_PER_GROUP, 0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(mask=MASK.astype(np.int32)), "mask"),
        (dict(mask=MASK[None]), "mask"),
        (dict(mask=np.zeros((1, 5), np.uint8)), "mask"),
        (dict(mask=np.asfortranarray(np.ones((8, 9), np.uint8))), "mask"),
        (dict(mask=np.zeros_like(MASK)), "zero area"),
        (dict(position=[0, 0, 0.1, 0.1, 1]), "position"),
        (dict(position=[0, 0, 0.1, float("nan"), 1, 0]), "position"),
        (dict(samples_per_group=(1, 2, 3)), "samples_per_group"),
        (dict(samples_per_group=(1, 2, 3, 4, 5, 6, -7)), "samples_per_group"),
        (dict(samples_per_group=(0,) * 7), "samples_per_group"),
        (dict(samples_per_group=(0.5,) * 7), "samples_per_group"),
        (dict(convention="x"), "convention"),
    ],
)
def test_sample_mask_targets_rejects_bad_input(kwargs, name):
    args = dict(mask=MASK, position=GOOD_POS, samples_per_group=DEFAULT_SAMPLES_PER_GROUP, rng=_rng())
    args.update(kwargs)
    for backend in ("cython", "numpy"):
        with pytest.raises(ValueError, match=name):
            sample_mask_targets(**args, backend=backend)


_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
_wild_position = st.lists(_floats, min_size=6, max_size=6)
_sane_position = st.tuples(
    st.floats(-1.5, 1.5), st.floats(-1.5, 1.5), st.floats(1e-4, 3), st.floats(1e-4, 3), st.floats(0, 2 * np.pi),
    st.floats(1e-3, 2),
).map(lambda v: v[:4] + (v[5] * np.cos(v[4]), v[5] * np.sin(v[4])))


def _mostly(sane, wild):
    """Sane values 9 times in 10 (so most examples reach the kernels), wild ones otherwise."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: sane if ok else wild)


_position = _mostly(_sane_position, _wild_position)
_sorted_sizes = st.sets(st.sampled_from([1, 2, 4, 8, 16]), min_size=1).map(sorted)
_wild_sizes = st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 1024]), max_size=5)
_thr_cov = _mostly(st.just((None, None)) | st.tuples(st.floats(0, 10), st.floats(0.01, 5)),
                   st.tuples(st.none() | st.floats(-1, 10), st.none() | st.floats(-1, 5)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=_mostly(st.integers(18, 48), st.integers(1, 20)),
    w=_mostly(st.integers(18, 48), st.integers(1, 20)),
    position=_position,
    num_tokens=_mostly(st.integers(1, 300), st.integers(-2, 0)),
    patch_sizes=_mostly(_sorted_sizes, _wild_sizes),
    thr_cov=_thr_cov,
    seed=st.integers(0, 2**32),
)
def test_fuzz_sample_patches(h, w, position, num_tokens, patch_sizes, thr_cov, seed):
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        out = sample_patches(image, position, num_tokens, patch_sizes, *thr_cov, np.random.default_rng(seed))
    except ValueError as exc:
        event(f"ValueError: {str(exc).split()[0]}")
        return
    event("ran")
    ref = sample_patches(image, position, num_tokens, patch_sizes, *thr_cov, np.random.default_rng(seed),
                         backend="numpy")
    total = 0
    for p, patches, coords, idx, rp, rc in zip(patch_sizes, *out, ref.patches, ref.coords):
        assert patches.shape == (len(idx), 3, p, p) and coords.shape == (len(idx), 2)
        assert np.array_equal(patches, rp) and np.array_equal(coords, rc)
        total += len(idx)
    assert total <= num_tokens


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=_mostly(st.integers(2, 30), st.integers(0, 3)),
    w=_mostly(st.integers(2, 30), st.integers(0, 3)),
    density=_mostly(st.floats(0.05, 0.95), st.floats(0, 1)),
    position=_position,
    spg=_mostly(st.lists(st.integers(0, 40), min_size=7, max_size=7),
                st.lists(st.integers(-1, 40), min_size=6, max_size=8)),
    as_bool=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_fuzz_sample_mask_targets(h, w, density, position, spg, as_bool, seed):
    mask = np.random.default_rng(seed).random((h, w)) < density
    mask = mask if as_bool else mask.astype(np.uint8) * np.uint8(seed % 255 + 1)
    try:
        out = sample_mask_targets(mask, position, spg, np.random.default_rng(seed))
    except ValueError as exc:
        event(f"ValueError: {str(exc).split()[0]}")
        return
    ref = sample_mask_targets(mask, position, spg, np.random.default_rng(seed), backend="numpy")
    if out is None:
        event("None (uniform crop)")
        assert ref is None
        return
    event("ran")
    coords, labels = out
    assert coords.shape == (sum(spg), 2) and labels.shape == (sum(spg),)
    assert np.array_equal(coords, ref[0]) and np.array_equal(labels, ref[1])


# --------------------------------------------------------------------------------------------------------------
# GIL release
# --------------------------------------------------------------------------------------------------------------

def _long_call():
    """One kernel call of ~0.2-0.5 s: many 1-px patches with a huge overlap threshold (no early exit)."""
    image = np.zeros((1200, 1200, 3), np.uint8)
    position = np.array([0, 0, 0.3, 0.3, 0, 1], np.float32)
    sample_patches(image, position, 400_000, (1,), 1e12, 10.0, np.random.default_rng(0))


def test_kernel_releases_the_gil():
    """While one thread is inside the kernel, a pure-Python thread keeps running (it could not with the GIL held:
    the kernel has no switch points)."""
    done = threading.Event()
    ticks = []

    def python_loop():
        while not done.is_set():
            ticks.append(time.perf_counter())

    worker = threading.Thread(target=python_loop)
    worker.start()
    try:
        t0 = time.perf_counter()
        _long_call()
        t1 = time.perf_counter()
    finally:
        done.set()
        worker.join()
    # the middle 60 % of the call is kernel time (validation and allocation are a few ms at the start)
    lo, hi = t0 + 0.2 * (t1 - t0), t1 - 0.2 * (t1 - t0)
    inside = [t for t in ticks if lo < t < hi]
    assert len(inside) > 10, f"python thread made {len(inside)} steps during {hi - lo:.3f}s of kernel time"


def test_two_threads_scale():
    """Two threads with separate generators finish 2x the work faster than one thread (>1.3x; shared machine).

    Needs two idle cores: skipped (with the measured ratio) when the load average says they are not available.
    """
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least 2 CPU cores")
    image, mask, position = spec_example()

    def work(seed, n=30):
        rng = np.random.default_rng(seed)
        for _ in range(n):
            sample_patches(image, position, 2048, SIZES, 0.5, 1.44 * 8, rng)

    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        work(0)
        work(1)
        serial = time.perf_counter() - t
        threads = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        parallel = time.perf_counter() - t
        best = max(best, serial / parallel)
        if best > 1.3:
            break
    if best <= 1.3 and os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5:
        pytest.skip(f"machine busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): two threads measured "
                    f"{best:.2f}x one; the GIL release itself is checked by test_kernel_releases_the_gil")
    assert best > 1.3, f"two threads only {best:.2f}x faster than one"
