"""The prompt-ellipse baseline: predict the pixels within Mahalanobis radius ``r`` of the prompt Gaussian.

It answers "how much of the score does the prompt alone give?". It uses no image.

Mask rule: the prompt (moments in frame N) is converted to pixel frame P exactly (``mu_p = n_to_p(mu_n)``,
``Sigma_p = D Sigma_n D`` with ``D = diag((W-1)/2, (H-1)/2)``, ``flip_core.gaussian`` frames). ``1/12`` px^2 (the
variance of a unit pixel square) is added to both diagonal entries so that a one-pixel or one-line object still has
an invertible covariance. Pixel ``(x, y)`` is inside when ``d^2 = (p - mu)^T Sigma^{-1} (p - mu) <= r^2``. For a
uniformly filled ellipse the moments give exactly its boundary at ``r = 2``, which is the prior value.

Choosing ``r`` without looking at the test instances (cross-fitting): every instance of a benchmark gets a fold,
0 or 1, from a seeded hash of its key (:func:`instance_fold`). ``r_f`` is the radius maximising the mean IoU over
(up to ``max_instances``, seeded subsample of) the instances of fold ``f`` on a grid (:data:`DEFAULT_RADII`); an
instance of fold ``f`` is then evaluated with ``r_{1-f}``, i.e. with a radius chosen on the other half. Every instance
is evaluated, and no instance's own mask influenced the radius used on it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import numpy as np

from flip_core.gaussian import n_to_p

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RADII",
    "PIXEL_VARIANCE",
    "mahalanobis_sq",
    "ellipse_mask",
    "instance_fold",
    "radius_iou_curve",
    "choose_radius",
]

DEFAULT_RADII: tuple[float, ...] = tuple(np.round(np.arange(1.0, 3.5001, 0.05), 4).tolist())
"""Radius grid searched by :func:`choose_radius` (Mahalanobis units)."""
PIXEL_VARIANCE = 1.0 / 12.0
"""px^2 added to the pixel-frame covariance diagonal (variance of a uniform unit pixel)."""


def mahalanobis_sq(moments_n: np.ndarray, height: int, width: int) -> np.ndarray:
    """Squared Mahalanobis distance of every pixel centre to the Gaussian ``moments_n``.

    Args:
        moments_n: (5,) ``[mu_x, mu_y, var_x, var_y, cov_xy]`` in frame N.
        height, width: image size in pixels.

    Returns:
        (H, W) float64 ``d^2`` in frame P (module docstring).
    """
    m = np.asarray(moments_n, dtype=np.float64)
    mu = n_to_p(m[:2], width, height)
    sx, sy = (width - 1) / 2.0, (height - 1) / 2.0
    a = m[2] * sx * sx + PIXEL_VARIANCE
    d = m[3] * sy * sy + PIXEL_VARIANCE
    b = m[4] * sx * sy
    det = max(a * d - b * b, 1e-12)
    dx = np.arange(width, dtype=np.float64)[None, :] - mu[0]
    dy = np.arange(height, dtype=np.float64)[:, None] - mu[1]
    return (d * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det


def ellipse_mask(moments_n: np.ndarray, height: int, width: int, radius: float) -> np.ndarray:
    """(H, W) bool: pixels within Mahalanobis radius ``radius`` of the Gaussian ``moments_n`` (frame N)."""
    if not radius > 0:
        raise ValueError(f"ellipse radius must be > 0, got {radius}")
    return mahalanobis_sq(moments_n, height, width) <= radius * radius


def instance_fold(key: str, seed: int) -> int:
    """Cross-fitting fold (0 or 1) of an instance from a seeded hash of its key (e.g. ``"coco/shard-00000/17"``)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return digest[0] & 1


def radius_iou_curve(
    moments_n: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None, radii: np.ndarray
) -> np.ndarray:
    """IoU of :func:`ellipse_mask` with ``gt`` for every radius at once (ignore pixels excluded).

    Args:
        moments_n: (5,) prompt moments, frame N.
        gt: (H, W) bool object mask.
        ignore: (H, W) bool or None.
        radii: (R,) increasing radii.

    Returns:
        (R,) float64 IoU per radius (0 where the union is empty), equal to ``metrics.iou`` of each mask.
    """
    h, w = gt.shape
    d2 = mahalanobis_sq(moments_n, h, w)
    valid = np.ones_like(gt, dtype=bool) if ignore is None else ~ignore
    d2_gt = np.sort(d2[gt & valid])
    d2_all = np.sort(d2[valid])
    r2 = np.asarray(radii, dtype=np.float64) ** 2
    inter = np.searchsorted(d2_gt, r2, side="right")
    pred = np.searchsorted(d2_all, r2, side="right")
    union = d2_gt.size + pred - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def choose_radius(
    samples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> tuple[float, np.ndarray, int]:
    """Radius with the highest mean IoU over calibration samples.

    Args:
        samples: iterable of ``(moments_n (5,), gt (H, W) bool, ignore (H, W) bool | None)``.
        radii: candidate radii.

    Returns:
        ``(best_radius, mean_iou_per_radius (R,), n_samples)``; the smallest radius wins ties. With no samples the
        prior ``2.0`` is returned with an all-NaN curve.
    """
    grid = np.asarray(radii, dtype=np.float64)
    total = np.zeros_like(grid)
    n = 0
    for moments, gt, ignore in samples:
        total += radius_iou_curve(moments, gt, ignore, grid)
        n += 1
    if n == 0:
        logger.warning("no calibration instances: using the prior ellipse radius 2.0")
        return 2.0, np.full_like(grid, np.nan), 0
    curve = total / n
    return float(grid[int(np.argmax(curve))]), curve, n
