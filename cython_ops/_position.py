"""Position helpers: prompt augmentation (spec 2.2) and token-budget sampling (spec 2.3).

Both are a handful of scalar draws, so they are plain NumPy for every backend (a Cython version would only save
Python-call overhead). Rotation from moments is :func:`flip_core.gaussian.moments_to_position`; it is not repeated here.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._common import check_position, check_rng

__all__ = ["augment_position", "sample_num_tokens"]


def augment_position(position, rng: np.random.Generator) -> np.ndarray:
    """Jitter a prompt position like reference training (spec 2.2, ``ext/position.c:apply_position_augmentation``).

    Draw order (all from ``rng``): ``z1, z2`` standard normal, ``U`` uniform [0, 1), ``z3, z4`` standard normal.

    - centre: ``mu + 0.1 sigma_x z1 (a, -b) + 0.1 sigma_y z2 (b, a)``, i.e. along the minor and major axes of the
      prompt's own ellipse. **Deviation**: the reference uses ``[[a, -b], [b, a]]``, which draws the jitter from the
      mirrored ellipse (spec 2.4); the effect is small (0.1 sigma).
    - rotation: ``f = min((2/36) min(sx, sy) / max(sx, sy, 1e-8), 2/36)``, ``theta = (2U - 1) 2 pi f``,
      ``(a, b) <- (cos t a - sin t b, sin t a + cos t b)``.
    - scale: ``sx += clip(0.1 sx z3, -0.3 sx, 0.3 sx)``, same for ``sy`` with ``z4``; then with
      ``alpha = 1 - exp(-f)`` and ``s = hypot(sx, sy)``: ``sx = (1 - alpha) sx + alpha s`` (same for ``sy``).

    Args:
        position: (6,) ``[mu_x, mu_y, sigma_x, sigma_y, rot_a, rot_b]`` in frame N.
        rng: the only source of randomness.

    Returns:
        (6,) float32 augmented position in frame N, ``(rot_a, rot_b)`` unit length.

    Raises:
        ValueError: position not 6 finite values with positive sigmas and a non-zero rotation vector.
        TypeError: rng is not a ``numpy.random.Generator``.
    """
    pos = check_position(position)
    check_rng(rng)
    mu_x, mu_y, sx, sy, a, b = (float(v) for v in pos)
    norm = math.hypot(a, b)
    a, b = a / norm, b / norm
    z1, z2 = rng.standard_normal(2)
    u = rng.random()
    z3, z4 = rng.standard_normal(2)
    dx, dy = 0.1 * sx * z1, 0.1 * sy * z2
    mu_x += a * dx + b * dy
    mu_y += -b * dx + a * dy
    f = min((2.0 / 36.0) * min(sx, sy) / max(sx, sy, 1e-8), 2.0 / 36.0)
    theta = (2.0 * u - 1.0) * 2.0 * math.pi * f
    c, s = math.cos(theta), math.sin(theta)
    a, b = c * a - s * b, s * a + c * b
    sx += min(max(0.1 * sx * z3, -0.3 * sx), 0.3 * sx)
    sy += min(max(0.1 * sy * z4, -0.3 * sy), 0.3 * sy)
    alpha = 1.0 - math.exp(-abs(f))
    iso = math.hypot(sx, sy)
    sx, sy = (1 - alpha) * sx + alpha * iso, (1 - alpha) * sy + alpha * iso
    return np.array([mu_x, mu_y, sx, sy, a, b], dtype=np.float32)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def sample_num_tokens(min_tokens: int, max_tokens: int, mean_tokens: float, rng: np.random.Generator) -> int:
    """Token budget for one sample (spec 2.3, ``ext/position.c:sample_num_tokens``).

    - ``min == max``: ``int(mean)``; ``max - min <= 1``: ``round(mean)`` (no draw).
    - otherwise ``s ~ Beta(2, beta)`` with ``m = (mean - min) / (max - min)``, ``beta = 2 (1/m - 1)``, and the result
      ``min + round(s (max - min))`` clipped to ``[min, max]``. The draw is ``rng.beta``, which is valid for every
      positive shape; the reference's Marsaglia-Tsang Gamma is invalid for ``beta < 1`` (``m > 2/3``; spec 9.9).
      ``m == 0`` returns ``min`` and ``m == 1`` returns ``max`` without a draw (the limits of the Beta).

    Args:
        min_tokens, max_tokens: inclusive bounds, ``1 <= min_tokens <= max_tokens``.
        mean_tokens: target mean, ``min_tokens <= mean_tokens <= max_tokens``.
        rng: the only source of randomness.

    Returns:
        int in ``[min_tokens, max_tokens]``.

    Raises:
        ValueError: bounds not positive integers in order, or the mean outside them / not finite.
        TypeError: rng is not a ``numpy.random.Generator``.
    """
    lo = _check_count("min_tokens", min_tokens)
    hi = _check_count("max_tokens", max_tokens)
    if hi < lo:
        raise ValueError(f"max_tokens must be >= min_tokens, got min_tokens={lo}, max_tokens={hi}")
    try:
        mean = float(mean_tokens)
    except (TypeError, ValueError):
        raise ValueError(f"mean_tokens must be a real number in [{lo}, {hi}], got {mean_tokens!r}") from None
    if not (math.isfinite(mean) and lo <= mean <= hi):
        raise ValueError(f"mean_tokens must be a finite number in [min_tokens, max_tokens] = [{lo}, {hi}], got {mean}")
    check_rng(rng)
    if lo == hi:
        return int(mean)
    if hi - lo <= 1:
        return int(round(mean))
    m = (mean - lo) / (hi - lo)
    if m <= 0.0:
        return lo
    if m >= 1.0:
        return hi
    s = float(rng.beta(2.0, 2.0 * (1.0 / m - 1.0)))
    return int(min(hi, max(lo, lo + round(s * (hi - lo)))))
