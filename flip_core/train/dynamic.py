"""Dynamic mask-point sampling (flip-spec §5.4, ``model/lightning/flip.py:analyze_and_update_mask_sampling``).

Every training step, per group g of the 7 boundary-distance groups:

1. ``IoU_g``: over group g's slice of each sample's points (logit > 0 counts as inside), per-sample IoU with the
   union clamped to 1e-6, averaged over the samples of the step;
2. ``EMA_g <- decay EMA_g + (1 - decay) IoU_g`` with ``decay = exp(-1 / ema_steps)`` (the first step sets
   ``EMA_g = IoU_g``);
3. ``d_g = 1 - EMA_g``; ``n_g = min_per_group + int((N - 7 min_per_group) d_g / sum d)``; ``n_0 += N - sum n``.
   When every ``d_g`` is 0 the counts are left as they are.

Difference from the reference: the reference writes the new counts into a shared-memory tensor read by its
DataLoader workers, which build batches ahead of time, so a batch may have been built with older counts than the
ones used to slice it (spec §9.5), and the counts depend on worker timing. Here each rank keeps its own state (as
each reference DDP rank did) but the loader always samples a full pool per group and the *training loop* applies
the current counts (:func:`flip_core.data.collate.to_flip_batch`): the slices always match, and the counts are a
deterministic function of the step, checkpointed with the run (resume reproduces them). Ranks are not averaged
(neither were the reference's).
"""

from __future__ import annotations

import math

import torch

from flip_core.train.config import NUM_MASK_GROUPS, DataConfig

__all__ = ["MaskGroupSampling", "group_ious"]


@torch.no_grad()
def group_ious(logits: torch.Tensor, targets: torch.Tensor, samples_per_group: tuple[int, ...]) -> list[float]:
    """Mean per-sample IoU of each group's slice.

    Args:
        logits: (B N,) float mask logits, samples contiguous, each with ``N = sum(samples_per_group)`` points.
        targets: (B N,) uint8 labels.
        samples_per_group: the counts the batch was built with.
    """
    n = sum(samples_per_group)
    pred = (logits.detach().reshape(-1, n) > 0).float()
    gt = targets.reshape(-1, n).float()
    out, start = [], 0
    for size in samples_per_group:
        if size == 0:
            out.append(1.0)
            continue
        p, t = pred[:, start:start + size], gt[:, start:start + size]
        inter = (p * t).sum(1)
        union = (p + t).sum(1) - inter
        out.append(float((inter / union.clamp(min=1e-6)).mean()))
        start += size
    return out


class MaskGroupSampling:
    """Per-rank state of the dynamic per-group point counts (module docstring)."""

    def __init__(self, data: DataConfig) -> None:
        self.total = data.num_mask_points
        self.min_per_group = data.min_samples_per_group
        self.enabled = data.dynamic_sampling
        self.decay = math.exp(-1.0 / data.ema_steps)
        self.counts: tuple[int, ...] = data.default_samples_per_group
        self.ema: list[float] | None = None

    def update(self, ious: list[float]) -> None:
        """Fold one step's group IoUs into the EMA and, if enabled, recompute the counts."""
        if self.ema is None:
            self.ema = list(ious)
        else:
            self.ema = [self.decay * e + (1.0 - self.decay) * v for e, v in zip(self.ema, ious)]
        if not self.enabled:
            return
        difficulty = [1.0 - e for e in self.ema]
        total_d = sum(difficulty)
        if total_d <= 0:
            return
        remaining = self.total - self.min_per_group * NUM_MASK_GROUPS
        counts = [self.min_per_group + int(remaining * d / total_d) for d in difficulty]
        counts[0] += self.total - sum(counts)
        self.counts = tuple(counts)

    def state_dict(self) -> dict:
        return {"counts": list(self.counts), "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.counts = tuple(int(c) for c in state["counts"])
        self.ema = None if state["ema"] is None else [float(v) for v in state["ema"]]
