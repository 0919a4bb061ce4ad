"""The spec's 640x480 example (spec 2.5, 3.4, 8): random RGB image and a 90x35 px ellipse at 30 degrees.

Used by the tests and ``benchmarks/bench_cython_ops.py``. "90x35" are the semi-axes in px, so the mask's pixel stds
are about (45, 17.5) px (spec 2.5).
"""

from __future__ import annotations

import math

import numpy as np

from flip_core.gaussian import mask_moments, moments_to_position


def ellipse_mask(width: int = 640, height: int = 480, semi_axes=(90.0, 35.0), angle_deg: float = 30.0,
                 centre=None) -> np.ndarray:
    """(H, W) uint8 {0, 1} filled ellipse; the major semi-axis points at ``angle_deg`` from +x towards +y (down)."""
    cx, cy = centre if centre is not None else ((width - 1) / 2, (height - 1) / 2)
    t = math.radians(angle_deg)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)
    v = -(xs - cx) * math.sin(t) + (ys - cy) * math.cos(t)
    return ((u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 <= 1.0).astype(np.uint8)


def spec_example(seed: int = 0):
    """``(image (480, 640, 3) uint8, mask (480, 640) uint8, position (6,) float32 frame N)`` of the spec example."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    mask = ellipse_mask()
    position = moments_to_position(mask_moments(mask))
    return image, mask, position
