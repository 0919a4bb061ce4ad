"""Random but valid :class:`FlipBatch` es for tests, benchmarks and the ONNX parity check (no data needed)."""

from __future__ import annotations

from typing import Sequence

import torch

from flip_core.model.batch import FlipBatch

__all__ = ["synthetic_batch"]


def synthetic_batch(patch_sizes: Sequence[int], tokens_per_sample: Sequence[int], queries_per_sample: Sequence[int],
                    *, generator: torch.Generator, with_targets: bool = True) -> FlipBatch:
    """A packed batch with random patches, prompts, patch centres and query points.

    Args:
        patch_sizes: patch sides, smallest first (``model.config.patch_sizes``).
        tokens_per_sample: B patch counts (each >= 1), split at random over the resolutions.
        queries_per_sample: B query counts.
        generator: seeded torch generator (CPU); every draw comes from it.
        with_targets: draw random {0, 1} targets.

    Returns:
        A CPU :class:`FlipBatch`. Prompts: ``mu ~ U(-1, 1)``, ``sigma ~ U(0.05, 0.8)`` (frame M), random unit
        rotation; patch centres and queries ``~ mu + 2 sigma N(0, 1)`` (unrotated; any point is valid input).
    """
    g, num_res = generator, len(patch_sizes)
    b = len(tokens_per_sample)
    if len(queries_per_sample) != b:
        raise ValueError(f"{b} token counts but {len(queries_per_sample)} query counts")
    counts = torch.zeros(b, num_res, dtype=torch.int64)
    for i, n in enumerate(tokens_per_sample):
        if n < 1:
            raise ValueError(f"tokens_per_sample[{i}] = {n}; need >= 1")
        which = torch.randint(0, num_res, (int(n),), generator=g)
        counts[i] = torch.bincount(which, minlength=num_res)
    rot = torch.randn(b, 2, generator=g)
    rot = rot / rot.norm(dim=1, keepdim=True).clamp(min=1e-6)
    mu = torch.rand(b, 2, generator=g) * 2 - 1
    sigma = torch.rand(b, 2, generator=g) * 0.75 + 0.05
    position = torch.cat([mu, sigma, rot], dim=1).float()

    def around(per_sample: torch.Tensor) -> torch.Tensor:
        idx = torch.repeat_interleave(torch.arange(b), per_sample)
        return (mu[idx] + 2 * sigma[idx] * torch.randn(idx.numel(), 2, generator=g)).float()

    patches, coords = [], []
    for r, p in enumerate(patch_sizes):
        n_r = int(counts[:, r].sum())
        patches.append(torch.randint(0, 256, (n_r, 3, p, p), generator=g, dtype=torch.uint8))
        coords.append(around(counts[:, r]))
    q_counts = torch.tensor(list(queries_per_sample), dtype=torch.int64)
    query = around(q_counts)
    targets = torch.randint(0, 2, (query.shape[0],), generator=g, dtype=torch.uint8) if with_targets else None
    return FlipBatch(patches=patches, patch_coords=coords, patch_counts=counts, position=position,
                     query_coords=query, query_counts=q_counts, targets=targets)
