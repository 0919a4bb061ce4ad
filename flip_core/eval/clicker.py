"""The RITM click simulator (``../shared/reference/benchmarks.md`` section 2.1), written from its description.

Source of the rule: ``SamsungLabs/ritm_interactive_segmentation:isegm/inference/clicker.py`` ``_get_next_click``.
For a prediction ``P``, ground truth ``G`` and ignore map ``I``:

1. ``FN = G & ~P & ~I``, ``FP = ~G & P & ~I``.
2. Both maps are zero-padded by one pixel (the image border counts as boundary), their Euclidean distance transform
   is taken (distance of each error pixel to the nearest non-error pixel) and the padding removed.
3. Both transforms are multiplied by the not-clicked map (pixels already clicked get 0).
4. ``positive = max(DT_FN) > max(DT_FP)`` (a tie, including 0 == 0, gives a negative click).
5. The click goes to the first pixel in row-major order attaining the chosen map's maximum.

Distance transform: RITM calls ``cv2.distanceTransform(m, cv2.DIST_L2, 0)``; mask size 0 is OpenCV's
``DIST_MASK_PRECISE``, the exact Euclidean transform. We use ``scipy.ndimage.distance_transform_edt`` (exact, float64;
no OpenCV dependency). Checked once against opencv-python-headless 5.0.0 on 300 random and blob masks (1-px padded,
up to 200x200): max |cv2 - scipy| = 4e-6 (cv2 returns float32 with a slightly inexact sqrt). The click differs only
on *exact* ties of a non-integer distance: e.g. two pixels with d^2 = 53 got 7.28011 and 7.2801094 from cv2, so cv2
picked the later pixel while we pick the first in row-major order (1 of the 300 masks; the chosen click's distance
is the same). Our rule is the documented one ("first pixel attaining the max"); RITM's choice there is float noise.
``tests/test_eval_metrics.py`` checks the transform against a brute-force exact computation.

Coordinates: clicks are ``(y, x)`` integer pixel indices (frame P, row then column), as RITM stores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["Click", "Clicker", "next_click", "padded_distance"]


@dataclass(frozen=True, slots=True)
class Click:
    """One simulated click."""

    is_positive: bool
    """True for a foreground (false-negative) click, False for a background (false-positive) click."""
    y: int
    """Row index (frame P)."""
    x: int
    """Column index (frame P)."""


def padded_distance(error: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each True pixel to the nearest False pixel or to the outside of the image.

    Equivalent to RITM's pad-by-1 / ``cv2.distanceTransform(DIST_L2, 0)`` / unpad (module docstring).

    Args:
        error: (H, W) bool error map.

    Returns:
        (H, W) float64, 0 outside ``error``.
    """
    padded = np.pad(np.asarray(error, dtype=bool), 1, mode="constant", constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None, not_clicked: np.ndarray) -> Click:
    """The next RITM click for a prediction (module docstring, steps 1-5).

    Args:
        pred: (H, W) bool current prediction (all False before the first click).
        gt: (H, W) bool object mask.
        ignore: (H, W) bool ignore map or None.
        not_clicked: (H, W) bool, False at pixels already clicked.

    Returns:
        the :class:`Click`.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    fn_dt = padded_distance(gt & ~pred & valid) * not_clicked
    fp_dt = padded_distance(~gt & pred & valid) * not_clicked
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    positive = bool(fn_max > fp_max)
    chosen = fn_dt if positive else fp_dt
    flat = int(np.argmax(chosen == chosen.max()))  # first row-major pixel attaining the maximum
    y, x = divmod(flat, chosen.shape[1])
    return Click(is_positive=positive, y=int(y), x=int(x))


class Clicker:
    """Stateful simulator for one instance: keeps the clicks so far and the not-clicked map.

    Args:
        gt: (H, W) bool object mask.
        ignore: (H, W) bool ignore map (True = ignore), or None.
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None):
        self.gt = np.asarray(gt, dtype=bool)
        self.ignore = None if ignore is None else np.asarray(ignore, dtype=bool)
        if self.ignore is not None and self.ignore.shape != self.gt.shape:
            raise ValueError(f"ignore map shape {self.ignore.shape} differs from mask shape {self.gt.shape}")
        self.not_clicked = np.ones(self.gt.shape, dtype=bool)
        self.clicks: list[Click] = []

    def make_next_click(self, pred: np.ndarray) -> Click:
        """Compute the next click for ``pred`` ((H, W) bool), record it and return it."""
        click = next_click(pred, self.gt, self.ignore, self.not_clicked)
        self.clicks.append(click)
        self.not_clicked[click.y, click.x] = False
        return click
