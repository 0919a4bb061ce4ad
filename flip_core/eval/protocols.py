"""Per-instance evaluation protocols: FLIP's ground-truth-Gaussian protocol and the RITM click protocol.

FLIP protocol (spec 6.1, benchmarks 2.4): the prompt is the ground-truth mask's moments (the shard's ``positions``,
frame N, no augmentation); one prediction at full resolution; one IoU per instance.
Deviation: pixels of an ignore region (GrabCut/Berkeley 128 band, DAVIS void) are left out of the IoU, as the click
benchmarks' peers do; the reference has no ignore handling.

Click protocol (benchmarks 2.1/2.2, RITM ``evaluation.py:evaluate_sample``): start from an empty prediction; up to
``max_clicks`` times: the RITM clicker (:mod:`flip_core.eval.clicker`) places a click from the current prediction,
the predictor runs through the click adapter (:mod:`flip_core.eval.adapter`), the IoU (ignore excluded) is recorded;
stop early once ``IoU >= target_iou`` and at least ``min_clicks`` clicks were made. The default ``target_iou = 1.01``
runs all clicks (needed for mIoU@k, as RITM/SegNext do with ``--print-ious``). Predictions are binary masks already
(FLIP thresholds logits at 0), so RITM's ``pred_thr`` has no counterpart.
"""

from __future__ import annotations

import time

import numpy as np

from flip_core.eval.adapter import ClickPromptAdapter
from flip_core.eval.clicker import Clicker
from flip_core.eval.metrics import iou, noc_per_instance
from flip_core.eval.predictors import Predictor

__all__ = ["flip_protocol_instance", "click_protocol_instance", "NOC_THRESHOLDS"]

NOC_THRESHOLDS = (0.85, 0.90, 0.95)


def flip_protocol_instance(
    predictor: Predictor,
    image: np.ndarray,
    gt: np.ndarray,
    ignore: np.ndarray | None,
    moments_n: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    """One instance under the FLIP protocol.

    Args:
        predictor: model or baseline.
        image: (H, W, 3) uint8 RGB.
        gt: (H, W) bool object mask.
        ignore: (H, W) bool ignore map or None.
        moments_n: (5,) ground-truth prompt ``[mu_x, mu_y, var_x, var_y, cov_xy]``, frame N.
        rng: the instance's generator.

    Returns:
        dict with ``iou`` (float), ``num_tokens`` (int), ``preprocess_ms``, ``model_ms``, ``postprocess_ms``,
        ``total_ms`` (float, wall time of the whole predictor call).
    """
    t0 = time.perf_counter()
    pred = predictor(image, moments_n, rng)
    total = (time.perf_counter() - t0) * 1e3
    if pred.mask.shape != gt.shape:
        raise ValueError(f"predictor returned a mask of shape {pred.mask.shape} for an image of shape {gt.shape}")
    t = pred.timings_ms
    return {
        "iou": iou(pred.mask, gt, ignore),
        "num_tokens": int(pred.num_tokens),
        "preprocess_ms": float(t.get("preprocess", np.nan)),
        "model_ms": float(t.get("model", np.nan)),
        "postprocess_ms": float(t.get("postprocess", np.nan)),
        "total_ms": total,
    }


def click_protocol_instance(
    adapter: ClickPromptAdapter,
    image: np.ndarray,
    gt: np.ndarray,
    ignore: np.ndarray | None,
    rng: np.random.Generator,
    *,
    max_clicks: int = 20,
    target_iou: float = 1.01,
    min_clicks: int = 1,
) -> dict:
    """One instance under the RITM click protocol (module docstring).

    Returns:
        dict with ``ious`` (list of float, one per click made), ``click_y``, ``click_x`` (lists of int, frame P),
        ``click_positive`` (list of bool), ``noc85``, ``noc90``, ``noc95`` (int, RITM rule with cap ``max_clicks``),
        ``num_predictions`` (predictor calls), ``mean_tokens`` and ``total_ms`` (wall time of all clicks, for SPC).
    """
    clicker = Clicker(gt, ignore)
    pred = np.zeros(gt.shape, dtype=bool)
    ious: list[float] = []
    tokens: list[int] = []
    t0 = time.perf_counter()
    for k in range(1, max_clicks + 1):
        clicker.make_next_click(pred)
        pred, _, call_tokens = adapter.predict(image, clicker.clicks, pred, rng)
        tokens.extend(call_tokens)
        ious.append(iou(pred, gt, ignore))
        if ious[-1] >= target_iou and k >= min_clicks:
            break
    total = (time.perf_counter() - t0) * 1e3
    row = {
        "ious": ious,
        "click_y": [c.y for c in clicker.clicks],
        "click_x": [c.x for c in clicker.clicks],
        "click_positive": [c.is_positive for c in clicker.clicks],
        "num_predictions": len(tokens),
        "mean_tokens": float(np.mean(tokens)) if tokens else 0.0,
        "total_ms": total,
    }
    for t in NOC_THRESHOLDS:
        row[f"noc{round(t * 100)}"] = int(noc_per_instance([ious], t, max_clicks)[0])
    return row
