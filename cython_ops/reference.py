"""Pure-NumPy reference versions of the ``cython_ops`` kernels: slow, short, and the specification of record.

Same signatures as the public functions in :mod:`cython_ops`. The draw order is the same as the Cython kernels', so
with the same seed both give bit-identical outputs (the tests check this):

``sample_patches``: [thr, coverage when both None] then, per placement attempt, ``z1, z2`` standard normal
(``Generator.standard_normal``). ``sample_mask_targets``: per group, inside then outside, first the k indices
(``Generator.integers(0, n)``), then k (x, y) jitter pairs (``Generator.random``).

Only the order of the floating-point summation of overlap areas differs from the Cython grid (the decision can flip
only when the sum is within a few ulp of the threshold).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._common import (
    DEFAULT_SAMPLES_PER_GROUP,
    GROUP_RANGE_ENDS,
    NUM_GROUPS,
    MaskParams,
    PatchParams,
    PatchPlacement,
    PatchSample,
    check_image,
    check_mask_area,
    check_region,
    prepare_mask,
    prepare_patches,
    split_patches,
)
from ._position import augment_position, sample_num_tokens

__all__ = [
    "sample_patches",
    "place_patches",
    "crop_patches",
    "sample_mask_targets",
    "augment_position",
    "sample_num_tokens",
    "boundary_pixels",
    "boundary_distance",
    "PatchSample",
    "DEFAULT_SAMPLES_PER_GROUP",
]


def _bilinear_patch(image: np.ndarray, cx: float, cy: float, p: int, origin=(0, 0)) -> np.ndarray:
    """(3, p, p) uint8 native-scale bilinear crop centred on (cx, cy), frame P (spec 3.3 step 5); ``image`` holds the
    image from pixel ``origin = (x, y)`` on.

    Base sample point ``X0 = cx - p/2 + 0.5`` (same for y); ``x0 = floor(X0)``, ``dx = X0 - x0``; pixel ``ix`` blends
    columns ``x0 + ix`` and ``x0 + ix + 1``, rows likewise. Separable, in float32: first
    ``h = (1 - dx) f[:, c] + dx f[:, c + 1]`` (weights rounded from float64 to float32), then
    ``v = (1 - dy) h[r] + dy h[r + 1]``, rounded as ``floor(v + 0.5)``. The reference computes the four-weight form
    per pixel (``X = cx + ix - h + 0.5``) in float and uses ``roundf``; the values agree to 1 grey level.
    """
    h = p / 2.0
    bx, by = cx - h + 0.5, cy - h + 0.5
    x0, y0 = int(bx), int(by)
    ax, dx = np.float32(1.0 - (bx - x0)), np.float32(bx - x0)
    ay, dy = np.float32(1.0 - (by - y0)), np.float32(by - y0)
    x0, y0 = x0 - origin[0], y0 - origin[1]
    f = image[y0:y0 + p + 1, x0:x0 + p + 1].astype(np.float32)  # (p+1, p+1, 3)
    hz = ax * f[:, :-1] + dx * f[:, 1:]  # (p+1, p, 3)
    v = ay * hz[:-1] + dy * hz[1:]
    return np.floor(v + np.float32(0.5)).astype(np.uint8).transpose(2, 0, 1)


def _place(params: PatchParams, rng: np.random.Generator):
    """Placement loop (spec 3.3) with the nominal overlap rule checked against every placed box; returns the counts
    per resolution and the accepted centres (frame P) in order."""
    (mx, my), (sx, sy), (a, b) = params.centre, params.sigma, params.rot
    w, h_img = params.width, params.height
    boxes = np.empty((sum(params.quota), 4))  # x0, y0, x1, y1 of every accepted box, all resolutions
    n_boxes = 0
    counts, centres = [], []
    for p, quota in zip(params.patch_sizes, params.quota):
        h = p / 2.0
        limit = params.overlap_threshold * p * p
        accepted = 0
        for _ in range(10 * quota):
            if accepted == quota:
                break
            z1, z2 = rng.standard_normal(2)
            u, v = sx * z1, sy * z2
            cx = mx + (a * u + b * v)
            cy = my + (-b * u + a * v)
            if not (cx - h >= 0.0 and cx + h < w - 1 and cy - h >= 0.0 and cy + h < h_img - 1):
                continue
            placed = boxes[:n_boxes]
            ix = np.minimum(placed[:, 2], cx + h) - np.maximum(placed[:, 0], cx - h)
            iy = np.minimum(placed[:, 3], cy + h) - np.maximum(placed[:, 1], cy - h)
            if float(np.sum(np.where((ix > 0) & (iy > 0), ix * iy, 0.0))) > limit:
                continue
            boxes[n_boxes] = (cx - h, cy - h, cx + h, cy + h)
            n_boxes += 1
            accepted += 1
            centres.append((cx, cy))
        counts.append(accepted)
    return counts, centres


def place_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, *,
                  convention="exact") -> PatchPlacement:
    """NumPy reference of :func:`cython_ops.place_patches` (same arguments, outputs and draw order)."""
    params = prepare_patches(image_size, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng,
                             convention)
    counts, placed = _place(params, rng)
    placed = np.asarray(placed, np.float64).reshape(-1, 2)
    # Quota-sized slot per resolution, laid out like the Cython kernel's buffers.
    centres = np.zeros((sum(params.quota), 2), np.float64)
    start = k = 0
    for q, n in zip(params.quota, counts):
        centres[start:start + n] = placed[k:k + n]
        start += q
        k += n
    coords = np.stack([centres[:, 0] / 128.0 - params.width / 256.0,
                       centres[:, 1] / 128.0 - params.height / 256.0], axis=1).astype(np.float32)
    box = None
    if len(placed):  # the pixels the crops read: p + 1 columns/rows from floor(c - p/2 + 0.5) (_bilinear_patch)
        sizes = np.repeat(np.asarray(params.patch_sizes, np.float64), counts)[:, None]
        first = np.floor(placed - sizes / 2.0 + 0.5)
        lo, hi = first.min(axis=0), (first + sizes + 1).max(axis=0)
        box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    return PatchPlacement(params, tuple(counts), centres, coords, box)


def crop_patches(image, placement, origin=(0, 0)) -> PatchSample:
    """NumPy reference of :func:`cython_ops.crop_patches`."""
    origin = check_region(image, placement, origin)
    params = placement.params
    patches_flat = np.zeros(sum(q * 3 * p * p for p, q in zip(params.patch_sizes, params.quota)), np.uint8)
    p_off = c_off = 0
    for p, q, n in zip(params.patch_sizes, params.quota, placement.counts):
        for j in range(n):
            cx, cy = placement.centres[c_off + j]
            patches_flat[p_off + j * 3 * p * p:p_off + (j + 1) * 3 * p * p] = _bilinear_patch(
                image, float(cx), float(cy), p, origin).ravel()
        p_off += q * 3 * p * p
        c_off += q
    return split_patches(params, placement.counts, patches_flat, placement.coords)


def sample_patches(image, position, num_tokens, patch_sizes, overlap_threshold, coverage, rng, *,
                   convention="exact") -> PatchSample:
    """NumPy reference of :func:`cython_ops.sample_patches` (same arguments, outputs and draw order)."""
    size = check_image(image)
    return crop_patches(image, place_patches(size, position, num_tokens, patch_sizes, overlap_threshold, coverage,
                                             rng, convention=convention))


def boundary_pixels(inside: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour (inside the array) of the other value; both sides of an edge count and
    the array border does not (spec 3.6 step 2)."""
    inside = np.asarray(inside, dtype=bool)
    boundary = np.zeros_like(inside)
    dv = inside[1:] != inside[:-1]
    dh = inside[:, 1:] != inside[:, :-1]
    boundary[1:] |= dv
    boundary[:-1] |= dv
    boundary[:, 1:] |= dh
    boundary[:, :-1] |= dh
    return boundary


def boundary_distance(inside: np.ndarray) -> np.ndarray:
    """L1 distance of every pixel to the nearest boundary pixel (spec 3.6 step 2).

    Uses ``scipy.ndimage.distance_transform_cdt(metric="taxicab")``, which is exact for the L1 metric. Pixels of an
    array without a boundary get ``H + W`` (the reference's INF).

    Args:
        inside: (H, W) bool.

    Returns:
        (H, W) int64 distances.
    """
    boundary = boundary_pixels(inside)
    if not boundary.any():
        return np.full(boundary.shape, sum(boundary.shape), dtype=np.int64)
    return ndimage.distance_transform_cdt(~boundary, metric="taxicab").astype(np.int64)


def _group_lists(inside: np.ndarray, dist: np.ndarray):
    """Per label, flat crop indices sorted by group bucket (stable: raster order within a bucket) and the cumulative
    group sizes (group g = the first ``sizes[g]`` entries: pixels with ``d <= GROUP_RANGE_ENDS[g]``; group 6 all)."""
    bucket = np.searchsorted(np.asarray(GROUP_RANGE_ENDS), dist.ravel(), side="left")  # 0..6
    lists = {}
    for label, sel in ((1, inside.ravel()), (0, ~inside.ravel())):
        idx = np.flatnonzero(sel)
        order = np.argsort(bucket[idx], kind="stable")
        sizes = np.cumsum(np.bincount(bucket[idx], minlength=NUM_GROUPS))
        lists[label] = (idx[order], sizes)
    return lists


def _source_group(sizes: np.ndarray, g: int) -> int:
    """First non-empty group in the order g, g-1, g+1, g-2, g+2, ... (spec 3.6 step 4)."""
    for off in range(NUM_GROUPS):
        for cand in (g - off, g + off):
            if 0 <= cand < NUM_GROUPS and sizes[cand] > 0:
                return cand
    raise AssertionError("no non-empty group although the crop has pixels of this label")


def _sample_groups(params: MaskParams, lists, crop_w: int, rng: np.random.Generator):
    x0, y0 = params.crop[0], params.crop[1]
    coords, labels = [], []
    for g, n in enumerate(params.samples_per_group):
        for label, k in ((1, n // 2), (0, n - n // 2)):
            if k == 0:
                continue
            flat, sizes = lists[label]
            src = _source_group(sizes, g)
            pix = flat[rng.integers(0, sizes[src], size=k)]
            jitter = rng.random((k, 2)) - 0.5
            x = (pix % crop_w + x0).astype(np.float64) + jitter[:, 0]
            y = (pix // crop_w + y0).astype(np.float64) + jitter[:, 1]
            coords.append(np.stack([x / 128.0 - params.width / 256.0, y / 128.0 - params.height / 256.0], 1))
            labels.append(np.full(k, label, np.uint8))
    return np.concatenate(coords).astype(np.float32), np.concatenate(labels)


def sample_mask_targets(mask, position, samples_per_group, rng, *, convention="exact"):
    """NumPy reference of :func:`cython_ops.sample_mask_targets` (same arguments, outputs and draw order)."""
    mask, params = prepare_mask(mask, position, samples_per_group, rng, convention)
    if params.crop is None:
        check_mask_area(mask)
        return None
    x0, y0, x1, y1 = params.crop
    inside = mask[y0:y1 + 1, x0:x1 + 1] != 0
    if inside.all() or not inside.any():
        check_mask_area(mask)
        return None
    lists = _group_lists(inside, boundary_distance(inside))
    return _sample_groups(params, lists, x1 - x0 + 1, rng)
