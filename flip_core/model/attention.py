"""Packed variable-length attention without xformers (spec 4.7).

Tokens of all samples are packed along one axis; sample ``b`` owns a contiguous block of ``q_lens[b]`` query rows
and ``kv_lens[b]`` key/value rows, and attends only within its own block (the reference's
``BlockDiagonalMask.from_seqlens``). Scale ``1/sqrt(head_dim)``, no dropout, no other mask.

Shape legend: ``H`` heads, ``Nq``/``Nk`` packed query/key rows, ``D`` query/key head dim, ``Dv`` value head dim.
All back-ends take ``q (H, Nq, D)``, ``k (H, Nk, D)``, ``v (H, Nk, Dv)`` and return ``(H, Nq, Dv)``.

Back-ends (all exact up to float rounding; ``tests/test_model_attention.py`` checks each against ``dense``):

- ``"dense"``: per-sample loop with explicit ``softmax(q k^T / sqrt(D)) v``. The reference implementation.
- ``"block_mask"``: one ``scaled_dot_product_attention`` call over the whole pack with a boolean block-diagonal
  mask. Cost grows with ``(sum of lengths)^2``: only sensible for one or a few samples.
- ``"split"``: per-sample loop over fused ``scaled_dot_product_attention`` calls (flash kernel on CPU, which keeps
  only the log-sum-exp for backward instead of the ``L x L`` probabilities).
- ``"padded"``: pad every sample to the longest, one SDPA call with a key-padding mask.
- ``"flex"``: ``flex_attention`` with a document mask. Without ``torch.compile`` it materialises the full
  ``Nq x Nk`` score matrix, and torch 2.13 has no FlexAttention backward on CPU, so on CPU it is inference-only
  and slow; it is meant for compiled CUDA use (not measured here: no GPU was available).
- ``"auto"``: :func:`resolve_backend` (``"split"`` on every device; see ``benchmarks/bench_model.py``).
"""

from __future__ import annotations

import logging
import math
from functools import cached_property

import torch
import torch.nn.functional as F

__all__ = ["ATTENTION_BACKENDS", "SeqLayout", "varlen_attention", "resolve_backend"]

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "dense", "block_mask", "split", "padded", "flex")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Concrete back-end for ``backend`` on ``device``.

    ``"auto"`` picks ``"split"``: in ``benchmarks/bench_model.py`` (FLIP-tiny, batch 64, shared 2-core VM) it was
    the fastest back-end in the quietest repeats (2.2x faster than ``dense`` best-of-5; ``padded`` was steadier
    under heavy load), never pads, and never stores ``L x L`` probabilities. No GPU was available to measure CUDA,
    so CUDA uses the same choice. Note: the CPU flash kernel's result for a query row can differ by ~1e-5 depending
    on how many rows share the call; use ``"dense"`` where bit-identical rows across batchings matter.

    Raises:
        ValueError: unknown back-end name.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {ATTENTION_BACKENDS}")
    return "split" if backend == "auto" else backend


class SeqLayout:
    """Per-sample block sizes of one packed batch, with derived index tensors built lazily and cached.

    Args:
        q_lens: query rows per sample, length B, each >= 0.
        kv_lens: key rows per sample, length B, each >= 1 (every sample has its registers).
        device: device of the packed tensors.
        backend: attention back-end name (see module docstring).
    """

    def __init__(self, q_lens: list[int], kv_lens: list[int], device: torch.device, backend: str = "auto"):
        if len(q_lens) != len(kv_lens):
            raise ValueError(f"q_lens has {len(q_lens)} samples but kv_lens has {len(kv_lens)}")
        if any(n < 1 for n in kv_lens) or any(n < 0 for n in q_lens):
            raise ValueError(f"kv_lens must be >= 1 and q_lens >= 0, got {kv_lens} / {q_lens}")
        self.q_lens = [int(n) for n in q_lens]
        self.kv_lens = [int(n) for n in kv_lens]
        self.device = torch.device(device)
        self.backend = resolve_backend(backend, self.device)

    def with_queries(self, q_lens: list[int]) -> SeqLayout:
        """Same key blocks, new query blocks (cross-attention of the mask head)."""
        return SeqLayout(q_lens, self.kv_lens, self.device, self.backend)

    @property
    def num_samples(self) -> int:
        return len(self.kv_lens)

    @cached_property
    def q_offsets(self) -> list[int]:
        return _offsets(self.q_lens)

    @cached_property
    def kv_offsets(self) -> list[int]:
        return _offsets(self.kv_lens)

    @cached_property
    def q_segment(self) -> torch.Tensor:
        """(Nq,) int64 sample index of every query row."""
        return _segment_ids(self.q_lens, self.device)

    @cached_property
    def kv_segment(self) -> torch.Tensor:
        """(Nk,) int64 sample index of every key row."""
        return _segment_ids(self.kv_lens, self.device)

    @cached_property
    def block_mask(self) -> torch.Tensor:
        """(Nq, Nk) bool, True where query and key belong to the same sample."""
        return self.q_segment[:, None] == self.kv_segment[None, :]

    def pad_index(self, lens: list[int]) -> tuple[torch.Tensor, int]:
        """(N,) flat row index ``b * Lmax + i`` of every packed row in a (B, Lmax) padded layout, and Lmax."""
        lmax = max(max(lens), 1)
        seg = _segment_ids(lens, self.device)
        starts = torch.tensor(_offsets(lens)[:-1], device=self.device, dtype=torch.int64)
        local = torch.arange(seg.numel(), device=self.device) - starts[seg]
        return seg * lmax + local, lmax

    @cached_property
    def padded_q(self) -> tuple[torch.Tensor, int]:
        return self.pad_index(self.q_lens)

    @cached_property
    def padded_kv(self) -> tuple[torch.Tensor, int]:
        return self.pad_index(self.kv_lens)

    @cached_property
    def key_padding_mask(self) -> torch.Tensor:
        """(B, 1, 1, Lk) bool, True for real keys."""
        lk = self.padded_kv[1]
        lens = torch.tensor(self.kv_lens, device=self.device)
        return (torch.arange(lk, device=self.device)[None, :] < lens[:, None])[:, None, None, :]


def _offsets(lens: list[int]) -> list[int]:
    out = [0]
    for n in lens:
        out.append(out[-1] + n)
    return out


def _segment_ids(lens: list[int], device: torch.device) -> torch.Tensor:
    counts = torch.tensor(lens, dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(len(lens), device=device), counts)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SeqLayout | None) -> torch.Tensor:
    """Block-diagonal attention over packed samples with ``layout.backend``.

    Args:
        q: (H, Nq, D) float queries, ``Nq == sum(layout.q_lens)``.
        k: (H, Nk, D) float keys, ``Nk == sum(layout.kv_lens)``.
        v: (H, Nk, Dv) float values.
        layout: block sizes and back-end; None means one sample owning every row, computed with plain
            ``softmax(q k^T / sqrt(D)) v`` and no Python-side lengths (used for ONNX tracing with dynamic axes).

    Returns:
        (H, Nq, Dv) attention output; each query row sees only the keys of its own sample.
    """
    if layout is None:
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1])), dim=-1)
        return torch.matmul(weights, v)
    if q.shape[1] != layout.q_offsets[-1] or k.shape[1] != layout.kv_offsets[-1] or v.shape[1] != k.shape[1]:
        raise ValueError(
            f"packed lengths q={q.shape[1]} k={k.shape[1]} v={v.shape[1]} do not match layout "
            f"sum(q_lens)={layout.q_offsets[-1]} sum(kv_lens)={layout.kv_offsets[-1]}")
    return _BACKENDS[layout.backend](q, k, v, layout)


def _per_sample(q, k, v, layout):
    """Per-sample views via ``Tensor.split`` (its backward is one ``cat``, not one full-size zero tensor per
    sample as with slicing)."""
    return zip(q.split(layout.q_lens, dim=1), k.split(layout.kv_lens, dim=1), v.split(layout.kv_lens, dim=1))


def _dense(q, k, v, layout):
    scale = 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for qb, kb, vb in _per_sample(q, k, v, layout):
        weights = torch.softmax(torch.matmul(qb, kb.transpose(-1, -2)) * scale, dim=-1)
        outs.append(torch.matmul(weights, vb))
    return torch.cat(outs, dim=1)


def _split(q, k, v, layout):
    # 4-D inputs: CPU SDPA only dispatches 4-D tensors to its fused flash kernel (3-D falls back to math).
    if layout.num_samples == 1:
        return F.scaled_dot_product_attention(q[None], k[None], v[None])[0]
    outs = [F.scaled_dot_product_attention(qb[None], kb[None], vb[None])[0]
            for qb, kb, vb in _per_sample(q, k, v, layout) if qb.shape[1] > 0]
    return torch.cat(outs, dim=1) if outs else q.new_zeros(q.shape[0], 0, v.shape[-1])


def _block_mask(q, k, v, layout):
    mask = None if layout.num_samples == 1 else layout.block_mask
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]


def _pad(x: torch.Tensor, index: torch.Tensor, lmax: int, batch: int) -> torch.Tensor:
    """(H, N, D) packed -> (B, H, Lmax, D) zero padded."""
    h, _, d = x.shape
    flat = x.new_zeros(h, batch * lmax, d).index_copy(1, index, x)
    return flat.view(h, batch, lmax, d).transpose(0, 1)


def _padded(q, k, v, layout):
    b = layout.num_samples
    qi, lq = layout.padded_q
    ki, lk = layout.padded_kv
    out = F.scaled_dot_product_attention(
        _pad(q, qi, lq, b), _pad(k, ki, lk, b), _pad(v, ki, lk, b), attn_mask=layout.key_padding_mask)
    return out.transpose(0, 1).reshape(q.shape[0], b * lq, v.shape[-1])[:, qi]


def _flex(q, k, v, layout):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q_seg, kv_seg = layout.q_segment, layout.kv_segment

    def same_sample(b, h, qi, ki):
        return q_seg[qi] == kv_seg[ki]

    mask = create_block_mask(same_sample, None, None, q.shape[1], k.shape[1], device=str(q.device))
    return flex_attention(q[None], k[None], v[None], block_mask=mask)[0]


_BACKENDS = {"dense": _dense, "split": _split, "block_mask": _block_mask, "padded": _padded, "flex": _flex}
