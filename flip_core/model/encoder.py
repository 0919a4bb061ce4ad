"""Encoder building blocks: feed-forward block, packed self-attention and the encoder layer (spec 4.4).

Shape legend: ``N`` packed tokens of all samples, ``C`` channels, ``H`` heads, ``D`` head dim. ``e`` is the (N, 2)
relative embedding of :func:`flip_core.model.embedding.relative_embedding` (registers: learned values).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from flip_core.model.attention import SeqLayout, varlen_attention
from flip_core.model.embedding import PositionMLP

__all__ = ["FeedForwardBlock", "SelfAttention", "EncoderLayer", "split_heads", "merge_heads", "norm_linear"]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, H*D) -> (H, N, D) view."""
    return x.view(x.shape[0], num_heads, x.shape[1] // num_heads).transpose(0, 1)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(H, N, D) -> (N, H*D)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def norm_linear(channels: int, out_features: int) -> nn.Sequential:
    """Pre-LayerNorm projection; children ``0`` (LayerNorm) and ``1`` (Linear) as in the reference."""
    return nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, out_features))


def output_projection(in_features: int, out_features: int) -> nn.Sequential:
    """Head-merge projection; the Linear is child ``1`` because the reference has a reshape at index 0."""
    return nn.Sequential(OrderedDict([("1", nn.Linear(in_features, out_features))]))


class FeedForwardBlock(nn.Module):
    """``alpha * (W2 SiLU(W1 LN(x) + b1) + b2)`` without the residual (spec 4.4).

    W1 (hidden, C) and W2 (C, hidden) use ``xavier_uniform``, biases start at 0, ``alpha`` at ``alpha``.
    Parameter names (``weight1, bias1, weight2, bias2, norm, alpha``) follow the reference.
    """

    def __init__(self, channels: int, hidden: int, alpha: float):
        super().__init__()
        self.weight1 = nn.Parameter(torch.empty(hidden, channels))
        self.bias1 = nn.Parameter(torch.zeros(hidden))
        self.weight2 = nn.Parameter(torch.empty(channels, hidden))
        self.bias2 = nn.Parameter(torch.zeros(channels))
        nn.init.xavier_uniform_(self.weight1)
        nn.init.xavier_uniform_(self.weight2)
        self.norm = nn.LayerNorm(channels)
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C)."""
        h = F.silu(F.linear(self.norm(x), self.weight1, self.bias1))
        return F.linear(h, self.weight2, self.bias2) * self.alpha


class SelfAttention(nn.Module):
    """Packed multi-head self-attention whose q/k/v get additive offsets from the relative embedding (spec 4.4).

    ``Q = Linear(LN_q(x)) + query(e)``, same for K and V; output ``alpha * Linear(Attn(Q, K, V))``.
    """

    def __init__(self, channels: int, num_heads: int, alpha: float, kq_expansion: int = 1, v_expansion: int = 1):
        super().__init__()
        self.num_heads = num_heads
        kq, vw = channels * kq_expansion, channels * v_expansion
        self.key, self.query, self.value = PositionMLP(kq), PositionMLP(kq), PositionMLP(vw)
        self.q, self.k, self.v = norm_linear(channels, kq), norm_linear(channels, kq), norm_linear(channels, vw)
        self.out = output_projection(vw, channels)
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x: torch.Tensor, e: torch.Tensor, layout: SeqLayout | None) -> torch.Tensor:
        """x (N, C), e (N, 2) -> residual branch (N, C)."""
        h = self.num_heads
        q = split_heads(self.q(x) + self.query(e), h)
        k = split_heads(self.k(x) + self.key(e), h)
        v = split_heads(self.v(x) + self.value(e), h)
        return self.out(merge_heads(varlen_attention(q, k, v, layout))) * self.alpha


class EncoderLayer(nn.Module):
    """``x += Attn(x, e)``; ``x += alpha * FFB(x)`` (spec 4.4; the MLP branch is scaled by two alphas)."""

    def __init__(self, channels: int, num_heads: int, hidden: int, alpha: float, kq_expansion: int = 1,
                 v_expansion: int = 1):
        super().__init__()
        self.attention = SelfAttention(channels, num_heads, alpha, kq_expansion, v_expansion)
        self.mlp = FeedForwardBlock(channels, hidden, alpha)
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x: torch.Tensor, e: torch.Tensor, layout: SeqLayout | None) -> torch.Tensor:
        """x (N, C), e (N, 2) -> (N, C)."""
        x = x + self.attention(x, e, layout)
        return x + self.mlp(x) * self.alpha
