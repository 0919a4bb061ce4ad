"""Segmentation metrics: IoU with ignore regions, NoC / NoF / mIoU@k, and object-size buckets.

Sources (``../shared/reference/benchmarks.md``):

- IoU: FLIP ``evaluate_single_hdf5.py:calculate_iou`` (spec 6.1: ``|P and G| / |P or G|``, 0 when the union is
  empty) combined with RITM ``isegm/inference/utils.py:get_iou`` (pixels labelled ignore, -1, are left out of both the
  intersection and the union). RITM divides by a zero union (NaN); we return 0 like FLIP (deviation, documented).
- NoC / NoF / mIoU@k: RITM ``isegm/inference/utils.py:compute_noc_metric`` (benchmarks 2.2), code-exact:
  ``NoC@t = argmax(ious >= t) + 1`` when ``t`` is reached, else ``max_clicks``; ``NoF@t`` counts the instances with
  ``NoC@t == max_clicks`` (this includes an instance that first reaches ``t`` exactly at the last click); mIoU@k is
  the mean over instances of the IoU after ``k`` clicks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "SIZE_BUCKETS",
    "iou",
    "noc_per_instance",
    "noc_nof",
    "miou_at_k",
    "size_bucket",
]

# (label, lower, upper) on the relative area |mask| / (H * W); lower inclusive, upper exclusive.
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<0.1%", 0.0, 0.001),
    ("0.1-1%", 0.001, 0.01),
    ("1-10%", 0.01, 0.1),
    (">10%", 0.1, float("inf")),
)


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two binary masks, ignoring the pixels of ``ignore``.

    Args:
        pred: (H, W) bool (or 0/1) predicted mask.
        gt: (H, W) bool (or 0/1) ground-truth object mask.
        ignore: optional (H, W) bool; True pixels count neither in the intersection nor in the union (RITM's
            ignore label -1: GrabCut/Berkeley 128 band, DAVIS void).

    Returns:
        IoU in [0, 1] as a Python float; 0.0 when the (non-ignored) union is empty (FLIP ``calculate_iou``).

    Raises:
        ValueError: if the shapes differ.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or (ignore is not None and np.shape(ignore) != gt.shape):
        shapes = (pred.shape, gt.shape, None if ignore is None else np.shape(ignore))
        raise ValueError(f"iou: pred, gt and ignore must have the same shape, got {shapes}")
    inter = pred & gt
    union = pred | gt
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        inter &= keep
        union &= keep
    u = int(union.sum())
    return float(inter.sum()) / u if u else 0.0


def noc_per_instance(ious: np.ndarray, threshold: float, max_clicks: int = 20) -> np.ndarray:
    """Number of clicks to reach ``threshold`` per instance (RITM ``compute_noc_metric``, inner ``_get_noc``).

    Args:
        ious: (N, K) float IoU after click 1..K (K <= max_clicks; a shorter row means the loop stopped early, which
            only happens after the threshold it stopped at was reached), or a sequence of 1-D arrays.
        threshold: IoU threshold, e.g. 0.85.
        max_clicks: the value given to instances that never reach ``threshold`` (RITM: 20).

    Returns:
        (N,) int64 ``argmax(ious >= t) + 1`` if reached else ``max_clicks``.
    """
    out = np.empty(len(ious), dtype=np.int64)
    for n, row in enumerate(ious):
        hit = np.asarray(row, dtype=np.float64) >= threshold
        out[n] = int(np.argmax(hit)) + 1 if hit.any() else max_clicks
    return out


def noc_nof(ious, thresholds: Sequence[float] = (0.85, 0.90, 0.95), max_clicks: int = 20):
    """Mean NoC and NoF count per threshold (RITM ``compute_noc_metric``, benchmarks 2.2).

    Args:
        ious: (N, K) IoU per instance and click, or a sequence of 1-D arrays.
        thresholds: IoU thresholds.
        max_clicks: cap and failure value (20).

    Returns:
        ``(noc, nof)``: dicts ``threshold -> mean NoC`` (float, NaN for N = 0) and ``threshold -> NoF`` (int count of
        instances whose NoC equals ``max_clicks``).
    """
    noc, nof = {}, {}
    for t in thresholds:
        per = noc_per_instance(ious, t, max_clicks)
        noc[t] = float(per.mean()) if per.size else float("nan")
        nof[t] = int((per == max_clicks).sum())
    return noc, nof


def miou_at_k(ious: np.ndarray) -> np.ndarray:
    """mIoU@k curve: mean over instances of the IoU after k clicks, k = 1..K.

    Only meaningful when every instance ran all K clicks (RITM sets ``target_iou = 1.01`` for this; benchmarks 2.2).

    Args:
        ious: (N, K) float, N >= 1.

    Returns:
        (K,) float64; element ``k - 1`` is mIoU@k (SegNext's 5-mIoU is element 4).

    Raises:
        ValueError: if ``ious`` is not a non-empty 2-D array (ragged rows mean an early stop).
    """
    arr = np.asarray(ious, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"miou_at_k needs an (N, K) array with N >= 1 (all clicks run), got shape {arr.shape}")
    return arr.mean(axis=0)


def size_bucket(relative_area: float | np.ndarray) -> np.ndarray:
    """Label of the object-size bucket (:data:`SIZE_BUCKETS`) of each relative area ``|mask| / (H * W)``.

    Returns:
        array of str labels with the shape of ``relative_area``.
    """
    rel = np.asarray(relative_area, dtype=np.float64)
    edges = np.array([b[2] for b in SIZE_BUCKETS[:-1]])
    labels = np.array([b[0] for b in SIZE_BUCKETS])
    return labels[np.searchsorted(edges, rel, side="right")]
