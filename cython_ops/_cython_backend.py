"""Validating Python wrappers around the compiled kernels (``cython_ops._kernels``); import fails if not built.

Same signatures, outputs and draw order as :mod:`cython_ops.reference`; docs on :func:`cython_ops.sample_patches`
and :func:`cython_ops.sample_mask_targets`.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from ._common import PatchSample, check_mask_area, prepare_mask, prepare_patches, split_patches


def sample_patches(image, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, *,
                   convention="exact") -> PatchSample:
    """Compiled :func:`cython_ops.sample_patches`."""
    params = prepare_patches(image, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, convention)
    sizes = np.array(params.patch_sizes, dtype=np.int32)
    quota = np.array(params.quota, dtype=np.int32)
    patches_flat = np.empty(sum(q * 3 * p * p for p, q in zip(params.patch_sizes, params.quota)), dtype=np.uint8)
    coords_flat = np.empty((sum(params.quota), 2), dtype=np.float32)
    counts = np.zeros(len(params.quota), dtype=np.int32)
    (mx, my), (sx, sy), (a, b) = params.centre, params.sigma, params.rot
    _kernels.place_patches(image, mx, my, sx, sy, a, b, sizes, quota, params.overlap_threshold, patches_flat,
                           coords_flat, counts, rng)
    return split_patches(params, counts, patches_flat, coords_flat)


def sample_mask_targets(mask, position, samples_per_group, rng, *, convention="exact"):
    """Compiled :func:`cython_ops.sample_mask_targets`."""
    mask, params = prepare_mask(mask, position, samples_per_group, rng, convention)
    if params.crop is None:
        check_mask_area(mask)
        return None
    total = sum(params.samples_per_group)
    coords = np.empty((total, 2), dtype=np.float32)
    labels = np.empty(total, dtype=np.uint8)
    spg = np.array(params.samples_per_group, dtype=np.int64)
    if not _kernels.mask_targets(mask, *params.crop, spg, coords, labels, rng):
        check_mask_area(mask)
        return None
    return coords, labels
