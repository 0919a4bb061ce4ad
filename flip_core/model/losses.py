"""Training loss and the per-sample sampled-point IoU (spec 4.6, ``model/flip.py:Flip.forward``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mask_loss", "sampled_point_iou"]


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 1 or targets.shape != logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (Q,)")


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over all sampled points (no class weighting), scalar float.

    Args:
        logits: (Q,) float.
        targets: (Q,) uint8/bool/float in {0, 1}.
    """
    _check(logits, targets)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


@torch.no_grad()
def sampled_point_iou(logits: torch.Tensor, targets: torch.Tensor, query_counts: torch.Tensor) -> torch.Tensor:
    """IoU per sample over its sampled points, prediction = ``logit > 0`` (spec 4.6).

    Args:
        logits: (Q,) float.
        targets: (Q,) {0, 1}.
        query_counts: (B,) int64 points per sample, summing to Q.

    Returns:
        (B,) float32 ``|pred & gt| / max(|pred | gt|, 1e-6)`` (0 when both are empty, as the reference).
    """
    _check(logits, targets)
    if int(query_counts.sum()) != logits.shape[0]:
        raise ValueError(f"query_counts sums to {int(query_counts.sum())}, logits has {logits.shape[0]} rows")
    b = query_counts.shape[0]
    seg = torch.repeat_interleave(torch.arange(b, device=logits.device), query_counts.to(logits.device))
    pred, gt = (logits > 0).float(), targets.float()
    inter = torch.zeros(b, device=logits.device).index_add_(0, seg, pred * gt)
    union = torch.zeros(b, device=logits.device).index_add_(0, seg, pred + gt) - inter
    return inter / union.clamp(min=1e-6)
