"""Validating Python wrappers around the compiled kernels (``cython_ops._kernels``); import fails if not built.

Same signatures, outputs and draw order as :mod:`cython_ops.reference`; docs on :func:`cython_ops.sample_patches`
and :func:`cython_ops.sample_mask_targets`.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from ._common import (
    PatchPlacement,
    PatchSample,
    check_image,
    check_mask_area,
    check_region,
    prepare_mask,
    prepare_patches,
    split_patches,
)


def place_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, *,
                  convention="exact") -> PatchPlacement:
    """Compiled :func:`cython_ops.place_patches`."""
    params = prepare_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng,
                             convention)
    total = sum(params.quota)
    centres = np.empty((total, 2), dtype=np.float64)
    coords = np.empty((total, 2), dtype=np.float32)
    (mx, my), (sx, sy), (a, b) = params.centre, params.sigma, params.rot
    counts, box = _kernels.place_patches(params.width, params.height, mx, my, sx, sy, a, b, params.patch_sizes,
                                         params.quota, params.overlap_threshold, centres, coords, rng)
    return PatchPlacement(params, counts, centres, coords, box)


def crop_patches(image, placement, origin=(0, 0)) -> PatchSample:
    """Compiled :func:`cython_ops.crop_patches`."""
    ox, oy = check_region(image, placement, origin)
    params = placement.params
    patches_flat = np.empty(sum(q * 3 * p * p for p, q in zip(params.patch_sizes, params.quota)), dtype=np.uint8)
    _kernels.crop_patches(image, ox, oy, params.patch_sizes, params.quota, placement.counts, placement.centres,
                          patches_flat)
    return split_patches(params, placement.counts, patches_flat, placement.coords)


def sample_patches(image, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, *,
                   convention="exact") -> PatchSample:
    """Compiled :func:`cython_ops.sample_patches`: :func:`place_patches` then :func:`crop_patches`."""
    size = check_image(image)
    return crop_patches(image, place_patches(size, position, num_tokens, patch_sizes, overlap_threshold, coverage,
                                             rng, convention=convention))


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
