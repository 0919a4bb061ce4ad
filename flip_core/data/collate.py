"""Packing prompts into the model's batch (``flip_core.model.FlipBatch``), and per-step mask-point selection.

:func:`collate_images` runs in the loader worker and stacks everything with the mask-point *pool*;
:func:`to_flip_batch` runs in the training loop and picks, per group, the number of points the current dynamic
sampling state asks for (see :mod:`flip_core.data.dataset`). Packed layout, as the reference's
``custom_collate_fn`` (flip-spec §5.3): per resolution the patches of all samples are concatenated in sample order;
B = number of prompts in the batch (images x prompts per image, minus dropped prompts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from flip_core.data.dataset import ImageSample
from flip_core.data.sampler import SampleKey

__all__ = ["CollatedBatch", "collate_images", "mask_point_index", "to_flip_batch"]


@dataclass(slots=True)
class CollatedBatch:
    """One micro-batch as produced by the loader (torch tensors, CPU)."""

    patches: list[torch.Tensor]
    """Per resolution r: (sum_b n_{b,r}, 3, p_r, p_r) uint8."""
    patch_coords: list[torch.Tensor]
    """Per resolution r: (sum_b n_{b,r}, 2) float32, frame M."""
    patch_counts: torch.Tensor
    """(B, R) int64 patches per sample and resolution."""
    position: torch.Tensor
    """(B, 6) float32 input positions, frame M."""
    pool_coords: torch.Tensor
    """(B, P, 2) float32 mask-point pool, frame M."""
    pool_labels: torch.Tensor
    """(B, P) uint8 labels of the pool."""
    keys: list[SampleKey]
    """The drawn images, in order."""
    counts: dict[str, int]
    """Redraws/drops while building this batch, by reason."""

    @property
    def num_samples(self) -> int:
        return int(self.position.shape[0])


def collate_images(items: list[ImageSample]) -> CollatedBatch:
    """Pack the prompts of several images (a DataLoader ``collate_fn``).

    Raises:
        ValueError: no prompt survived in the whole micro-batch (the message lists the redraw counts).
    """
    prompts = [p for item in items for p in item.prompts]
    counts = sum((Counter(item.counts) for item in items), Counter())
    if not prompts:
        raise ValueError(f"no usable prompt in a micro-batch of {len(items)} images; redraws/drops: {dict(counts)}")
    num_res = len(prompts[0].patches)
    patches = [torch.from_numpy(np.concatenate([p.patches[r] for p in prompts])) for r in range(num_res)]
    coords = [torch.from_numpy(np.concatenate([p.coords[r] for p in prompts])) for r in range(num_res)]
    patch_counts = torch.tensor([[len(p.coords[r]) for r in range(num_res)] for p in prompts], dtype=torch.int64)
    return CollatedBatch(
        patches=patches, patch_coords=coords, patch_counts=patch_counts,
        position=torch.from_numpy(np.stack([p.position for p in prompts])),
        pool_coords=torch.from_numpy(np.stack([p.mask_coords for p in prompts])),
        pool_labels=torch.from_numpy(np.stack([p.mask_labels for p in prompts])),
        keys=[item.key for item in items], counts=dict(counts))


def mask_point_index(pool_layout: tuple[int, ...], samples_per_group: tuple[int, ...]) -> torch.Tensor:
    """Indices into a pool laid out as ``pool_layout`` giving ``samples_per_group`` points per group.

    Group g's pool block holds ``m_g // 2`` inside then ``m_g - m_g // 2`` outside points; the selection takes the
    first ``n_g // 2`` inside and the first ``n_g - n_g // 2`` outside ones, keeping the reference output order
    ``[g0 inside, g0 outside, g1 inside, ...]`` (spec §3.6 step 5).

    Raises:
        ValueError: a group asks for more inside or outside points than its pool block has.
    """
    if len(pool_layout) != len(samples_per_group):
        raise ValueError(f"pool has {len(pool_layout)} groups, counts have {len(samples_per_group)}")
    parts, start = [], 0
    for g, (m, n) in enumerate(zip(pool_layout, samples_per_group)):
        n_in, n_out = n // 2, n - n // 2
        if n_in > m // 2 or n_out > m - m // 2:
            raise ValueError(f"group {g}: {n} points requested but the pool block holds {m}")
        parts += [torch.arange(start, start + n_in), torch.arange(start + m // 2, start + m // 2 + n_out)]
        start += m
    return torch.cat(parts)


def to_flip_batch(batch: CollatedBatch, pool_layout: tuple[int, ...], samples_per_group: tuple[int, ...]):
    """The model's ``FlipBatch`` with ``samples_per_group`` mask points per group for every sample.

    Returns:
        ``flip_core.model.FlipBatch`` with ``query_coords`` (B N, 2) float32 frame M, ``targets`` (B N,) uint8 and
        ``query_counts`` (B,) int64 all equal to ``N = sum(samples_per_group)``.
    """
    from flip_core.model import FlipBatch

    idx = mask_point_index(tuple(pool_layout), tuple(samples_per_group))
    b, n = batch.num_samples, len(idx)
    return FlipBatch(
        patches=batch.patches, patch_coords=batch.patch_coords, patch_counts=batch.patch_counts,
        position=batch.position,
        query_coords=batch.pool_coords[:, idx].reshape(b * n, 2).contiguous(),
        query_counts=torch.full((b,), n, dtype=torch.int64),
        targets=batch.pool_labels[:, idx].reshape(b * n).contiguous())
