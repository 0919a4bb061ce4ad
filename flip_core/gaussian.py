"""Gaussian prompt math: mask moments, the position 6-vector, and the three coordinate frames.

Frames (``../shared/reference/flip-spec.md`` section 0), for an image of width ``W`` and height ``H``:

- **P** (pixel): ``x`` = column, ``y`` = row, the centre of pixel ``(c, r)`` is the integer point ``(c, r)``.
- **N** (normalised): ``x_n = -1 + 2 x_p / (W - 1)``, ``y_n = -1 + 2 y_p / (H - 1)``: ``linspace(-1, 1, W)`` over pixel
  centres. The HDF5 ``positions`` dataset is in this frame.
- **M** (model): ``x_m = x_p / 128 - W / 256``, ``y_m = y_p / 128 - H / 256``: 128 px per unit, origin near the
  image centre. Everything the network sees is in this frame.

Representations of one Gaussian:

- **moments** ``(..., 5)``: ``[mu_x, mu_y, var_x, var_y, cov_xy]`` (the reference calls this "rho"; it is a covariance).
- **position** ``(..., 6)``: ``[mu_x, mu_y, sigma_x, sigma_y, rot_a, rot_b]`` with ``sigma_x`` the *minor* and ``sigma_y``
  the *major* standard deviation; ``(rot_a, rot_b)`` is a unit vector, the major axis points along ``(rot_b, rot_a)``
  and the minor axis along ``(rot_a, -rot_b)`` (spec 0). The network maps a point ``u`` to
  ``z = [[a, -b], [b, a]] (u - mu) / (sigma_x, sigma_y)``.

Deviations from the reference, each deliberate:

- :func:`moments_to_position` fixes the 90 degree error of ``ext/position.c:compute_position_rot_from_rho`` when
  ``cov_xy == 0`` and ``var_y > var_x`` (spec 2.1, 9.4). Elsewhere it matches the reference to float32 precision.
- :func:`mask_bbox` counts row 0 and column 0 (the reference's ``compute_bbox_from_mask`` does not; spec 1.1, 9.6).
- :func:`position_n_to_p` / :func:`position_n_to_m` default to the *exact* frame change (the covariance is transformed
  as ``D Sigma D`` with ``D = diag((W-1)/2, (H-1)/2)`` and re-diagonalised). ``convention="reference"`` reproduces the
  reference's per-axis scaling of the eigen-sigmas (spec 2.5), which the released checkpoints were trained with.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = [
    "Convention",
    "mask_moments",
    "mask_bbox",
    "moments_to_position",
    "position_to_covariance",
    "covariance_to_position",
    "rotation_matrix",
    "n_to_p",
    "p_to_n",
    "p_to_m",
    "m_to_p",
    "position_n_to_p",
    "position_p_to_m",
    "position_n_to_m",
]

Convention = Literal["exact", "reference"]
_EPS = 1e-16


def mask_moments(
    mask: np.ndarray, *, origin: tuple[int, int] = (0, 0), image_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Biased first and second moments of a binary mask in frame N.

    Source: ``model/scripts/convert_coco_to_hdf5.py:compute_gaussian_params_from_mask`` (spec 1.2). Pixels with
    ``mask > 0.5`` count; ``S = max(sum, 1e-16)``; population (biased) moments. Computed in float64 (the reference
    uses float32) and returned as float32, the dtype of the HDF5 ``positions`` dataset.

    Args:
        mask: (H, W) array of any real dtype; ``H, W >= 2``. With ``image_shape`` given, ``mask`` is instead a crop
            (h, w) of a larger (H, W) mask whose pixels outside the crop are all 0 (the converter passes the bounding
            crop, which is much cheaper than the full image).
        origin: ``(row, col)`` of ``mask[0, 0]`` inside the full mask (only with ``image_shape``).
        image_shape: ``(H, W)`` of the full mask, or None when ``mask`` is the full mask.

    Returns:
        (5,) float32 ``[mu_x, mu_y, var_x, var_y, cov_xy]`` in frame N. An empty mask gives all zeros.

    Raises:
        ValueError: if the full mask is not 2-D or is smaller than 2x2, or the crop does not fit inside it.
    """
    mask = np.asarray(mask)
    full = mask.shape if image_shape is None else tuple(image_shape)
    r0, c0 = (0, 0) if image_shape is None else (int(origin[0]), int(origin[1]))
    if mask.ndim != 2 or len(full) != 2 or full[0] < 2 or full[1] < 2:
        raise ValueError(f"mask must be a 2-D array of at least 2x2 pixels, got shape {full}")
    if r0 < 0 or c0 < 0 or r0 + mask.shape[0] > full[0] or c0 + mask.shape[1] > full[1]:
        raise ValueError(f"crop of shape {mask.shape} at origin {(r0, c0)} does not fit in a {full} mask")
    h, w = full
    m = (mask > 0.5).astype(np.float64)
    xs = np.linspace(-1.0, 1.0, w)[c0 : c0 + mask.shape[1]]
    ys = np.linspace(-1.0, 1.0, h)[r0 : r0 + mask.shape[0]]
    col = m.sum(axis=0)  # (W,)
    row = m.sum(axis=1)  # (H,)
    s = max(float(col.sum()), _EPS)
    mu_x = float(col @ xs) / s
    mu_y = float(row @ ys) / s
    var_x = float(col @ (xs * xs)) / s - mu_x * mu_x
    var_y = float(row @ (ys * ys)) / s - mu_y * mu_y
    cov = float(ys @ (m @ xs)) / s - mu_x * mu_y
    return np.array([mu_x, mu_y, var_x, var_y, cov], dtype=np.float32)


def mask_bbox(mask: np.ndarray, threshold: float = 0.75) -> np.ndarray:
    """Inclusive pixel bounding box of ``mask > threshold`` in frame P.

    Same layout and threshold as the reference ``instance_mask_bboxes`` (spec 1.1), but row 0 and column 0 count.

    Args:
        mask: (H, W) array.
        threshold: pixels strictly above it are inside.

    Returns:
        (4,) float32 ``[x_min, y_min, x_max, y_max]``.

    Raises:
        ValueError: if no pixel is above the threshold (an empty mask has no bounding box).
    """
    inside = np.asarray(mask) > threshold
    cols = np.flatnonzero(inside.any(axis=0))
    rows = np.flatnonzero(inside.any(axis=1))
    if cols.size == 0:
        raise ValueError(f"mask of shape {inside.shape} has no pixel above {threshold}: no bounding box")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def covariance_to_position(mu: np.ndarray, var_x, var_y, cov) -> np.ndarray:
    """Eigen-decompose 2x2 covariances into position 6-vectors (float64 math).

    Source: ``ext/position.c:compute_position_rot_from_rho`` (spec 2.1), with the same ``1e-16`` clamps. The reference
    takes the major eigenvector as ``(vx - vy + term, 2c)``, which degenerates to ``(0, 0)`` when ``c == 0`` and
    ``vy > vx``; we then use the equivalent form ``(2c, vy - vx + term)``. Sign convention as the reference:
    ``rot_b >= 0``, and ``rot_a = 1`` when the major axis is exactly vertical.

    Args:
        mu: (..., 2) centres.
        var_x, var_y, cov: (...) covariance entries.

    Returns:
        (..., 6) float64 ``[mu_x, mu_y, sigma_minor, sigma_major, rot_a, rot_b]``.
    """
    vx = np.asarray(var_x, dtype=np.float64)
    vy = np.asarray(var_y, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    term = np.sqrt(np.maximum((vx - vy) * (vx - vy) + 4 * c * c, _EPS))
    sigma_minor = np.sqrt(np.maximum((vx + vy) / 2 - term / 2, _EPS))
    sigma_major = np.sqrt(np.maximum((vx + vy) / 2 + term / 2, _EPS))
    # Major eigenvector (v0, v1) = (rot_b, rot_a). Two algebraically equal forms; take the better conditioned one.
    wide = vx >= vy
    v0 = np.where(wide, vx - vy + term, 2 * c)
    v1 = np.where(wide, 2 * c, vy - vx + term)
    flip = v0 < 0
    v0 = np.where(flip, -v0, v0)
    v1 = np.where(flip, -v1, v1)
    norm = np.sqrt(np.maximum(v0 * v0 + v1 * v1, _EPS))
    rot_b = v0 / norm
    rot_a = v1 / norm
    degenerate = (v0 * v0 + v1 * v1) < _EPS  # isotropic: any axis; use (a, b) = (0, 1) like the reference
    rot_a = np.where(degenerate, 0.0, rot_a)
    rot_b = np.where(degenerate, 1.0, rot_b)
    mu = np.asarray(mu, dtype=np.float64)
    return np.concatenate(
        [mu, np.stack([sigma_minor, sigma_major, rot_a, rot_b], axis=-1)], axis=-1
    )


def moments_to_position(moments: np.ndarray) -> np.ndarray:
    """Convert moments ``(..., 5)`` to position 6-vectors ``(..., 6)`` in the same frame (spec 2.1, bug fixed).

    Args:
        moments: (..., 5) ``[mu_x, mu_y, var_x, var_y, cov_xy]``, any float dtype.

    Returns:
        (..., 6) float32 ``[mu_x, mu_y, sigma_minor, sigma_major, rot_a, rot_b]``.

    Raises:
        ValueError: if the last axis is not 5 or a value is not finite.
    """
    moments = np.asarray(moments, dtype=np.float64)
    if moments.shape[-1:] != (5,):
        raise ValueError(f"moments must have a last axis of 5, got shape {moments.shape}")
    if not np.all(np.isfinite(moments)):
        raise ValueError("moments contain NaN or inf")
    out = covariance_to_position(moments[..., :2], moments[..., 2], moments[..., 3], moments[..., 4])
    return out.astype(np.float32)


def rotation_matrix(position: np.ndarray) -> np.ndarray:
    """The matrix ``[[a, -b], [b, a]]`` that maps image offsets to the Gaussian's (minor, major) axes (spec 2.4).

    Args:
        position: (..., 6) position vectors; ``(a, b)`` is renormalised (norm clamped at 1e-6, as the model does).

    Returns:
        (..., 2, 2) float64.
    """
    p = np.asarray(position, dtype=np.float64)
    a, b = p[..., 4], p[..., 5]
    n = np.maximum(np.sqrt(a * a + b * b), 1e-6)
    a, b = a / n, b / n
    return np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)


def position_to_covariance(position: np.ndarray) -> np.ndarray:
    """Covariance matrices of position 6-vectors: ``sx^2 u u^T + sy^2 v v^T``, ``u = (a, -b)``, ``v = (b, a)``.

    ``(a, b)`` is renormalised first (norm clamped at 1e-6, as :func:`rotation_matrix`).

    Args:
        position: (..., 6).

    Returns:
        (..., 2, 2) float64, in the frame of ``position``.
    """
    p = np.asarray(position, dtype=np.float64)
    cxx, cyy, cxy = _covariance_entries(p[..., 2], p[..., 3], p[..., 4], p[..., 5], np.sqrt, np.maximum)
    return np.stack([np.stack([cxx, cxy], -1), np.stack([cxy, cyy], -1)], -2)


def _covariance_entries(sx, sy, a, b, sqrt, maximum):
    """``(cov_xx, cov_yy, cov_xy)`` of position entries; one formula for arrays (NumPy) and Python floats (math).

    Every operation is an IEEE-754 double operation in the same order for both, so the scalar fast path of
    :func:`position_n_to_p` is bit-identical to the array path.
    """
    n = maximum(sqrt(a * a + b * b), 1e-6)
    a, b = a / n, b / n
    sx2, sy2 = sx * sx, sy * sy
    return sx2 * a * a + sy2 * b * b, sx2 * b * b + sy2 * a * a, sy2 * a * b - sx2 * a * b


def _eigen_position(vx, vy, c):
    """Scalar twin of :func:`covariance_to_position` for Python floats (same operations, same order)."""
    term = math.sqrt(max((vx - vy) * (vx - vy) + 4 * c * c, _EPS))
    sigma_minor = math.sqrt(max((vx + vy) / 2 - term / 2, _EPS))
    sigma_major = math.sqrt(max((vx + vy) / 2 + term / 2, _EPS))
    v0, v1 = (vx - vy + term, 2 * c) if vx >= vy else (2 * c, vy - vx + term)
    if v0 < 0:
        v0, v1 = -v0, -v1
    norm = math.sqrt(max(v0 * v0 + v1 * v1, _EPS))
    if v0 * v0 + v1 * v1 < _EPS:
        return sigma_minor, sigma_major, 0.0, 1.0
    return sigma_minor, sigma_major, v1 / norm, v0 / norm


def n_to_p(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points ``(..., 2)`` from frame N to frame P (exact inverse of ``linspace(-1, 1, W)``)."""
    xy = np.asarray(xy, dtype=np.float64)
    scale = np.array([(width - 1) / 2, (height - 1) / 2])
    return (xy + 1.0) * scale


def p_to_n(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points ``(..., 2)`` from frame P to frame N."""
    xy = np.asarray(xy, dtype=np.float64)
    scale = np.array([(width - 1) / 2, (height - 1) / 2])
    return xy / scale - 1.0


def p_to_m(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points ``(..., 2)`` from frame P to frame M: ``x / 128 - W / 256``, ``y / 128 - H / 256`` (spec 0)."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy / 128.0 - np.array([width / 256.0, height / 256.0])


def m_to_p(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points ``(..., 2)`` from frame M to frame P."""
    xy = np.asarray(xy, dtype=np.float64)
    return (xy + np.array([width / 256.0, height / 256.0])) * 128.0


def position_n_to_p(position: np.ndarray, width: int, height: int, convention: Convention = "exact") -> np.ndarray:
    """Position 6-vectors ``(..., 6)`` from frame N to frame P (float64).

    ``"exact"``: ``mu`` by :func:`n_to_p`; the covariance as ``D Sigma D``, ``D = diag((W-1)/2, (H-1)/2)``, then
    re-diagonalised, so a rotated ellipse on a non-square image keeps its true pixel shape.
    ``"reference"``: the C wrappers' rule (spec 3.1 step 3): ``mu_p = (mu_n + 1) * (W/2, H/2)``, ``sigma_x *= W/2``,
    ``sigma_y *= H/2`` whatever the orientation, ``(a, b)`` unchanged (spec 2.5).

    A single (6,) position takes a Python-float path (the loader converts one prompt at a time, and NumPy's
    per-call overhead on 6 numbers was most of its cost); it is bit-identical to the array path.
    """
    p = np.asarray(position, dtype=np.float64)
    if convention not in ("exact", "reference"):
        raise ValueError(f"convention must be 'exact' or 'reference', got {convention!r}")
    if p.shape == (6,):
        return np.array(_position_n_to_p_scalar(p.tolist(), width, height, convention))
    if convention == "reference":
        scale = np.array([width / 2, height / 2, width / 2, height / 2, 1.0, 1.0])
        return (p + np.array([1.0, 1.0, 0, 0, 0, 0])) * scale
    d = np.array([(width - 1) / 2, (height - 1) / 2])
    cov = position_to_covariance(p) * d[:, None] * d[None, :]
    return covariance_to_position(n_to_p(p[..., :2], width, height), cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1])


def _position_n_to_p_scalar(p: list[float], width: int, height: int, convention: str) -> list[float]:
    """:func:`position_n_to_p` of one position as Python floats (same operations and order as the array path)."""
    if convention == "reference":
        return [(p[0] + 1.0) * (width / 2), (p[1] + 1.0) * (height / 2), (p[2] + 0.0) * (width / 2),
                (p[3] + 0.0) * (height / 2), (p[4] + 0.0) * 1.0, (p[5] + 0.0) * 1.0]
    dx, dy = (width - 1) / 2, (height - 1) / 2
    cxx, cyy, cxy = _covariance_entries(p[2], p[3], p[4], p[5], math.sqrt, max)
    cxx, cyy, cxy = cxx * dx * dx, cyy * dy * dy, cxy * dx * dy
    return [(p[0] + 1.0) * dx, (p[1] + 1.0) * dy, *_eigen_position(cxx, cyy, cxy)]


def position_p_to_m(position: np.ndarray, width: int, height: int) -> np.ndarray:
    """Position 6-vectors ``(..., 6)`` from frame P to frame M: an isotropic scale by 1/128 plus a shift."""
    p = np.array(position, dtype=np.float64, copy=True)
    p[..., :2] = p_to_m(p[..., :2], width, height)
    p[..., 2:4] /= 128.0
    return p


def position_n_to_m(position: np.ndarray, width: int, height: int, convention: Convention = "exact") -> np.ndarray:
    """Position 6-vectors ``(..., 6)`` from frame N to frame M (float64).

    ``"exact"`` goes through frame P (:func:`position_n_to_p` then :func:`position_p_to_m`). ``"reference"`` is
    ``hdf5_lightning_flip_loader.py:_load``: ``mu_x * W/256, mu_y * H/256, sigma_x * W/256, sigma_y * H/256``,
    rotation unchanged (spec 0).
    """
    p = np.asarray(position, dtype=np.float64)
    if convention not in ("exact", "reference"):
        raise ValueError(f"convention must be 'exact' or 'reference', got {convention!r}")
    if p.shape == (6,):  # Python-float path, bit-identical to the array path (see position_n_to_p)
        if convention == "reference":
            q = p.tolist()
            return np.array([q[0] * (width / 256), q[1] * (height / 256), q[2] * (width / 256),
                             q[3] * (height / 256), q[4] * 1.0, q[5] * 1.0])
        q = _position_n_to_p_scalar(p.tolist(), width, height, convention)
        return np.array([q[0] / 128.0 - width / 256.0, q[1] / 128.0 - height / 256.0, q[2] / 128.0, q[3] / 128.0,
                         q[4], q[5]])
    if convention == "reference":
        return p * np.array([width / 256, height / 256, width / 256, height / 256, 1.0, 1.0])
    return position_p_to_m(position_n_to_p(p, width, height, convention), width, height)
