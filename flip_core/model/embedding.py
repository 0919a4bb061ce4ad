"""Token embeddings: per-size patch embeddings and the Gaussian-relative 2-D embedding (spec 4.2, 4.3).

State-dict names follow the reference (``patch_embeddings.{r}.layers.{i}``) so checkpoints load both ways; the
index gaps are where the reference has parameter-free reshapes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["PatchEmbedding", "PositionMLP", "relative_embedding", "EMBEDDING_CLIP"]

EMBEDDING_CLIP = 5.0
"""Relative coordinates are clipped to [-5, 5] (5 sigma), spec 4.3."""


class _CellRegroup(nn.Module):
    """(N, 3, p, p) -> (N, 4, 4, 3 * (p/4)^2): split a patch into a 4x4 grid of cells, channel-major per cell.

    Matches the reference's ``b c (h h1) (w w1) -> b h w (c h1 w1)`` with h = w = 4 (spec 4.2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, p, _ = x.shape
        s = p // 4
        return x.reshape(n, c, 4, s, 4, s).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, 4, c * s * s)


class _FlattenFrom1(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # not reshape(n, -1): n may be 0


class PatchEmbedding(nn.Module):
    """MLP embedding of p x p RGB patches into C channels (spec 4.2).

    - p <= 4: flatten ``(c, h, w)`` -> Linear(3p^2, 4C) -> SiLU -> Linear(4C, C).
    - p = 8 / 16: 4x4 grid of (p/4)-px cells -> shared Linear(3(p/4)^2, C/4) -> flatten ``(h, w, c)`` to 4C ->
      SiLU -> Linear(4C, 4C) -> SiLU -> Linear(4C, C).

    Args:
        patch_size: p in {1, 2, 4, 8, 16}.
        channels: C (divisible by 16).
    """

    def __init__(self, patch_size: int, channels: int):
        super().__init__()
        hidden = 4 * channels
        if patch_size <= 4:
            self.layers = nn.Sequential(
                _FlattenFrom1(), nn.Linear(3 * patch_size**2, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        elif patch_size in (8, 16):
            cell = 3 * (patch_size // 4) ** 2
            self.layers = nn.Sequential(
                _CellRegroup(), nn.Linear(cell, hidden // 16), _FlattenFrom1(), nn.SiLU(),
                nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        else:
            raise ValueError(f"patch_size must be one of 1, 2, 4, 8, 16, got {patch_size}")
        self.patch_size = patch_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 3, p, p) float in [0, 1] -> (N, C). N may be 0."""
        return self.layers(patches)


class PositionMLP(nn.Sequential):
    """2 -> 32 -> 32 -> ``out_features`` MLP with SiLU, applied to relative coordinates (spec 4.4).

    Children are named ``0``, ``2``, ``4`` (Linear) like the reference's ``nn.Sequential``.
    """

    def __init__(self, out_features: int):
        super().__init__(OrderedDict([
            ("0", nn.Linear(2, 32)), ("1", nn.SiLU()), ("2", nn.Linear(32, 32)), ("3", nn.SiLU()),
            ("4", nn.Linear(32, out_features)),
        ]))


def relative_embedding(position: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Gaussian-relative coordinates ``clip(R(a, b) (c - mu) / sigma, -5, 5)`` (spec 4.3).

    Source: ``nn/complex_gaus2d_resolution_independent.py:sparse_embedding``. ``(a, b)`` is normalised with its
    norm clamped at >= 1e-6 and sigma is clamped at >= 1e-8, as in the reference.

    Args:
        position: (N, 6) or (1, 6) float ``[mu_x, mu_y, sigma_x, sigma_y, a, b]`` in frame M, one row per
            coordinate (or one row broadcast to all).
        coords: (N, 2) float points in frame M.

    Returns:
        (N, 2) float relative coordinates ``[z_minor, z_major]``.
    """
    mu, sigma, rot = position[:, 0:2], position[:, 2:4].clamp(min=1e-8), position[:, 4:6]
    rot = rot / torch.sqrt((rot * rot).sum(dim=-1, keepdim=True)).clamp(min=1e-6)
    a, b = rot[:, 0:1], rot[:, 1:2]
    d = coords - mu
    dx, dy = d[:, 0:1], d[:, 1:2]
    z = torch.cat([a * dx - b * dy, b * dx + a * dy], dim=-1) / sigma
    return z.clamp(-EMBEDDING_CLIP, EMBEDDING_CLIP)
