"""The packed training/inference batch consumed by :class:`flip_core.model.Flip` (CONTRACTS.md "Model").

Shape legend: ``B`` samples, ``R`` resolutions (patch sizes), ``n_r`` patches of resolution r over the whole batch,
``Q`` query points over the whole batch. Per sample the patches of each resolution are contiguous and in sample
order; the same holds for query points.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

__all__ = ["FlipBatch"]


@dataclasses.dataclass
class FlipBatch:
    """Packed variable-length batch.

    Attributes:
        patches: R tensors (n_r, 3, p_r, p_r) uint8 RGB patches, one per patch size (smallest first).
        patch_coords: R tensors (n_r, 2) float32 patch centres, frame M.
        patch_counts: (B, R) int64 patches per sample and resolution; column r sums to n_r.
        position: (B, 6) float32 input prompt ``[mu_x, mu_y, sigma_x, sigma_y, a, b]``, frame M.
        query_coords: (Q, 2) float32 mask query points, frame M.
        query_counts: (B,) int64 query points per sample; sums to Q.
        targets: (Q,) uint8 {0, 1} labels of the query points, or None at inference.
    """

    patches: list[torch.Tensor]
    patch_coords: list[torch.Tensor]
    patch_counts: torch.Tensor
    position: torch.Tensor
    query_coords: torch.Tensor
    query_counts: torch.Tensor
    targets: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        """B."""
        return int(self.position.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FlipBatch:
        """Copy of the batch with every tensor on ``device``."""
        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)
        return FlipBatch(
            patches=[mv(p) for p in self.patches], patch_coords=[mv(c) for c in self.patch_coords],
            patch_counts=mv(self.patch_counts), position=mv(self.position), query_coords=mv(self.query_coords),
            query_counts=mv(self.query_counts), targets=mv(self.targets))

    def validate(self, patch_sizes: Sequence[int] | None = None) -> None:
        """Check shapes, dtypes and values; called by the model before every forward.

        Raises:
            ValueError: naming the offending field with its shape, dtype or value: wrong number of resolutions,
                wrong patch shape, non-uint8 patches, non-float32 coordinates, counts that do not add up,
                a sample without patches, non-finite values, non-positive sigma, bad targets.
        """
        num_res = len(self.patches)
        if num_res == 0:
            raise ValueError("FlipBatch.patches is empty: expected one tensor per patch size")
        if patch_sizes is not None and num_res != len(patch_sizes):
            raise ValueError(f"FlipBatch.patches has {num_res} resolutions, the model expects {len(patch_sizes)} "
                             f"(patch sizes {tuple(patch_sizes)})")
        if len(self.patch_coords) != num_res:
            raise ValueError(f"FlipBatch.patch_coords has {len(self.patch_coords)} tensors, patches has {num_res}")
        self._check_position()
        b = self.num_samples
        _check_int(self.patch_counts, "patch_counts", (b, num_res))
        counts = self.patch_counts.sum(dim=0).tolist()
        for r in range(num_res):
            self._check_resolution(r, counts[r], None if patch_sizes is None else patch_sizes[r])
        per_sample = self.patch_counts.sum(dim=1)
        if (per_sample < 1).any():
            bad = torch.nonzero(per_sample < 1).flatten().tolist()
            raise ValueError(f"samples {bad} have no patches (empty patch lists); every sample needs >= 1 patch")
        self._check_queries()

    def _check_position(self) -> None:
        p = self.position
        if p.ndim != 2 or p.shape[1] != 6:
            raise ValueError(f"FlipBatch.position must be (B, 6), got shape {tuple(p.shape)}")
        if p.dtype != torch.float32:
            raise ValueError(f"FlipBatch.position must be float32, got {p.dtype}")
        if p.shape[0] == 0:
            raise ValueError("FlipBatch.position has 0 samples")
        if not torch.isfinite(p).all():
            rows = torch.nonzero(~torch.isfinite(p).all(dim=1)).flatten().tolist()
            raise ValueError(f"FlipBatch.position has non-finite values in samples {rows}: {p[rows].tolist()}")
        if (p[:, 2:4] <= 0).any():
            rows = torch.nonzero((p[:, 2:4] <= 0).any(dim=1)).flatten().tolist()
            raise ValueError(f"FlipBatch.position has non-positive sigma in samples {rows}: "
                             f"{p[rows, 2:4].tolist()}")

    def _check_resolution(self, r: int, count: int, size: int | None) -> None:
        x, c = self.patches[r], self.patch_coords[r]
        if x.dtype != torch.uint8:
            raise ValueError(f"FlipBatch.patches[{r}] must be uint8, got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or (size is not None and x.shape[2] != size):
            raise ValueError(f"FlipBatch.patches[{r}] must be (n, 3, {size or 'p'}, {size or 'p'}), "
                             f"got shape {tuple(x.shape)}")
        if c.dtype != torch.float32 or c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"FlipBatch.patch_coords[{r}] must be (n, 2) float32, got {tuple(c.shape)} {c.dtype}")
        if x.shape[0] != count or c.shape[0] != count:
            raise ValueError(f"resolution {r}: patch_counts sums to {count} but patches has {x.shape[0]} rows and "
                             f"patch_coords {c.shape[0]} rows (mismatched sequence lengths)")
        if not torch.isfinite(c).all():
            raise ValueError(f"FlipBatch.patch_coords[{r}] has non-finite values")

    def _check_queries(self) -> None:
        q, b = self.query_coords, self.num_samples
        if q.dtype != torch.float32 or q.ndim != 2 or q.shape[1] != 2:
            raise ValueError(f"FlipBatch.query_coords must be (Q, 2) float32, got {tuple(q.shape)} {q.dtype}")
        _check_int(self.query_counts, "query_counts", (b,))
        total = int(self.query_counts.sum())
        if total != q.shape[0]:
            raise ValueError(f"query_counts sums to {total} but query_coords has {q.shape[0]} rows "
                             f"(mismatched sequence lengths)")
        if not torch.isfinite(q).all():
            raise ValueError("FlipBatch.query_coords has non-finite values")
        t = self.targets
        if t is not None:
            if t.dtype not in (torch.uint8, torch.bool) or t.shape != (q.shape[0],):
                raise ValueError(f"FlipBatch.targets must be ({q.shape[0]},) uint8, got {tuple(t.shape)} {t.dtype}")
            if t.numel() and int(t.max()) > 1:
                raise ValueError(f"FlipBatch.targets must be 0/1, found value {int(t.max())}")


def _check_int(t: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if t.dtype != torch.int64 or tuple(t.shape) != shape:
        raise ValueError(f"FlipBatch.{name} must be {shape} int64, got {tuple(t.shape)} {t.dtype}")
    if (t < 0).any():
        raise ValueError(f"FlipBatch.{name} has negative values: {t.tolist()}")
