"""Cross-attention mask head with a key/value cache (spec 4.5).

Queries depend only on the query point's position relative to the prompt Gaussian; keys and values come from
the encoder tokens of the same sample (registers included). ``prepare`` computes the per-token keys/values once
(:class:`KVCache`), ``decode`` evaluates any number of query batches against them, which is how
:func:`flip_core.model.predict_mask` and the ONNX predictor graph reuse the encoder output.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn

from flip_core.model.attention import SeqLayout, varlen_attention
from flip_core.model.embedding import PositionMLP, relative_embedding
from flip_core.model.encoder import FeedForwardBlock, merge_heads, norm_linear, output_projection, split_heads

__all__ = ["KVCache", "MaskAttention", "MaskHead"]


@dataclasses.dataclass(frozen=True)
class KVCache:
    """Encoder output prepared for mask queries.

    Attributes:
        k: (H, Nk, D) float keys of every packed token.
        v: (H, Nk, Dv) float values.
        position: (B, 6) float input prompt per sample, frame M.
        layout: key blocks per sample (``layout.kv_lens``) and the attention back-end.
    """

    k: torch.Tensor
    v: torch.Tensor
    position: torch.Tensor
    layout: SeqLayout


class MaskAttention(nn.Module):
    """Mask-head attention (spec 4.5): ``q = query(e_u)``, ``k = k_mlp([k(x) | key(e_t)])``, ``v = v(x) + value(e_t)``.

    Child names (``key, query, value, k, v, k_mlp, out``) follow the reference.
    """

    def __init__(self, channels: int, num_heads: int, kq_expansion: int = 1, v_expansion: int = 1):
        super().__init__()
        self.num_heads = num_heads
        kq, vw = channels * kq_expansion, channels * v_expansion
        self.key, self.query, self.value = PositionMLP(vw), PositionMLP(kq), PositionMLP(vw)
        self.k, self.v = norm_linear(channels, vw), norm_linear(channels, vw)
        self.k_mlp = nn.Sequential(OrderedDict([
            ("0", nn.Linear(2 * vw, vw)), ("1", nn.SiLU()), ("2", nn.Linear(vw, kq))]))
        self.out = output_projection(vw, channels)

    def keys_values(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C), e (N, 2) -> k (H, N, D), v (H, N, Dv)."""
        k = self.k_mlp(torch.cat([self.k(x), self.key(e)], dim=-1))
        v = self.v(x) + self.value(e)
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)

    def attend(self, e_query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SeqLayout | None) -> torch.Tensor:
        """e_query (Q, 2), cached k/v -> (Q, C)."""
        q = split_heads(self.query(e_query), self.num_heads)
        return self.out(merge_heads(varlen_attention(q, k, v, layout)))


class MaskHead(nn.Module):
    """``x += FFB_pre(x)``; cross-attention; ``y += FFB_post(y)``; ``logit = Linear(C, 1)(y)`` (spec 4.5)."""

    def __init__(self, channels: int, num_heads: int, hidden: int, alpha: float, kq_expansion: int = 1,
                 v_expansion: int = 1):
        super().__init__()
        self.preprocess = FeedForwardBlock(channels, hidden, alpha)
        self.attention = MaskAttention(channels, num_heads, kq_expansion, v_expansion)
        self.postprocess = FeedForwardBlock(channels, hidden, alpha)
        self.to_mask = nn.Linear(channels, 1)

    def prepare(self, x: torch.Tensor, e: torch.Tensor, position: torch.Tensor, layout: SeqLayout | None) -> KVCache:
        """Encoder tokens x (N, C) and embeddings e (N, 2) -> :class:`KVCache`. position (B, 6) frame M."""
        x = x + self.preprocess(x)
        k, v = self.attention.keys_values(x, e)
        return KVCache(k=k, v=v, position=position, layout=layout)

    def decode(self, cache: KVCache, query_coords: torch.Tensor, query_counts: list[int]) -> torch.Tensor:
        """Logits for query points.

        Args:
            cache: from :meth:`prepare`.
            query_coords: (Q, 2) float frame M; the first ``query_counts[0]`` rows belong to sample 0, etc.
            query_counts: B ints summing to Q.

        Returns:
            (Q,) float logits (> 0 means inside the object).
        """
        counts = torch.tensor(query_counts, dtype=torch.int64, device=query_coords.device)
        pos = torch.repeat_interleave(cache.position, counts, dim=0, output_size=query_coords.shape[0])
        e_query = relative_embedding(pos, query_coords)
        y = self.attention.attend(e_query, cache.k, cache.v, cache.layout.with_queries(list(query_counts)))
        y = y + self.postprocess(y)
        return self.to_mask(y).squeeze(-1)
