"""The FLIP network: token assembly, encoder stack and mask head (spec 4.3-4.6).

Module tree and names mirror the reference so ``'net.' + key`` of :meth:`Flip.state_dict` is the reference
Lightning key (``net.encoder.layers.0.attention.q.1.weight``, ...):

- ``encoder.sparsify`` (:class:`TokenAssembly`): ``patch_sizes`` buffer, ``patch_embeddings.{r}``, ``registers``,
  ``register_embeddings``, ``register_coordinates``.
- ``encoder.layers.{i}`` (:class:`~flip_core.model.encoder.EncoderLayer`).
- ``encoder.mask_extractor`` (:class:`~flip_core.model.mask_head.MaskHead`).

Deviation: ``register_coordinates`` is dead in the reference (written into a coordinate tensor nobody reads, zero
gradient, spec 9.14). It is kept as a *frozen* parameter (``requires_grad=False``) only so that parameter counts and
state dicts match the reference; its value never affects any output.

Shape legend: ``B`` samples, ``R`` registers, ``N`` packed tokens (``sum_b R + n_b``), ``C`` channels.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from flip_core.model.attention import SeqLayout, resolve_backend
from flip_core.model.batch import FlipBatch
from flip_core.model.config import FlipConfig
from flip_core.model.embedding import PatchEmbedding, relative_embedding
from flip_core.model.encoder import EncoderLayer
from flip_core.model.mask_head import KVCache, MaskHead

__all__ = ["Flip", "FlipEncoder", "TokenAssembly"]

logger = logging.getLogger(__name__)


class TokenAssembly(nn.Module):
    """Embeds patches and lays out each sample as ``[R registers | res-0 patches | ... | res-last]`` (spec 4.3).

    Token content is the patch embedding (registers: learned vectors); the (N, 2) embedding ``e`` is the
    Gaussian-relative patch centre (registers: learned ``register_embeddings``).
    """

    def __init__(self, config: FlipConfig):
        super().__init__()
        c, r = config.channels, config.num_registers
        self.num_registers = r
        self.register_buffer("patch_sizes", torch.tensor(config.patch_sizes, dtype=torch.float32))
        self.patch_embeddings = nn.ModuleList(PatchEmbedding(p, c) for p in config.patch_sizes)
        self.registers = nn.Parameter(torch.randn(r, c))
        self.register_embeddings = nn.Parameter(torch.randn(r, 2) * 0.25 - 5)
        self.register_coordinates = nn.Parameter(torch.randn(r, 2) * 0.25 + 5, requires_grad=False)

    def forward(self, patches: list[torch.Tensor], coords: list[torch.Tensor], counts: torch.Tensor,
                position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Packed tokens.

        Args:
            patches: per resolution (n_r, 3, p, p) float in [0, 1].
            coords: per resolution (n_r, 2) float patch centres, frame M.
            counts: (B, num_res) int64 patches per sample and resolution.
            position: (B, 6) float input prompt, frame M.

        Returns:
            x (N, C) token content, e (N, 2) embedding, and the B token counts ``R + n_b``.
        """
        b, dev, reg = counts.shape[0], counts.device, self.num_registers
        tokens = counts.sum(dim=1) + reg
        start = torch.cumsum(tokens, 0) - tokens
        res_start = start[:, None] + reg + torch.cumsum(counts, 1) - counts  # (B, num_res)
        sample_ids = torch.arange(b, device=dev)
        dest = [(start[:, None] + torch.arange(reg, device=dev)).reshape(-1)]
        xs = [self.registers.expand(b, -1, -1).reshape(b * reg, -1)]
        es = [self.register_embeddings.expand(b, -1, -1).reshape(b * reg, 2)]
        for r, embed in enumerate(self.patch_embeddings):
            n_r = coords[r].shape[0]
            seg = torch.repeat_interleave(sample_ids, counts[:, r], output_size=n_r)
            first = torch.cumsum(counts[:, r], 0) - counts[:, r]
            dest.append(res_start[seg, r] + torch.arange(n_r, device=dev) - first[seg])
            xs.append(embed(patches[r]))
            es.append(relative_embedding(position[seg], coords[r]))
        dest_all = torch.cat(dest)
        order = torch.empty_like(dest_all)
        order[dest_all] = torch.arange(dest_all.numel(), device=dev)
        return torch.cat(xs)[order], torch.cat(es)[order], tokens.tolist()


class FlipEncoder(nn.Module):
    """Token assembly, L encoder layers and the mask head (the reference's ``FlipEncoder``)."""

    def __init__(self, config: FlipConfig):
        super().__init__()
        heads, hidden = config.num_heads, config.ffn_hidden
        kq, v = config.kq_expansion, config.v_expansion
        self.sparsify = TokenAssembly(config)
        self.layers = nn.ModuleList(
            EncoderLayer(config.channels, heads, hidden, config.alpha, kq, v) for _ in range(config.layers))
        self.mask_extractor = MaskHead(config.channels, heads, hidden, config.alpha, kq, v)


class Flip(nn.Module):
    """FLIP: segment the object under a 2-D Gaussian prompt from foveated multi-size patches (spec 4).

    Args:
        config: architecture.
        attention: attention back-end (``flip_core.model.attention.ATTENTION_BACKENDS``); changeable later via
            the ``attention`` attribute. It never changes the maths.
        gradient_checkpointing: recompute encoder layers in backward (the reference's ``memory_efficient``).
    """

    def __init__(self, config: FlipConfig, *, attention: str = "auto", gradient_checkpointing: bool = False):
        super().__init__()
        resolve_backend(attention, torch.device("cpu"))
        self.config = config
        self.attention = attention
        self.gradient_checkpointing = gradient_checkpointing
        self.encoder = FlipEncoder(config)

    def forward(self, batch: FlipBatch) -> torch.Tensor:
        """Mask logits (Q,) float32 for ``batch.query_coords`` (> 0 means inside). Validates the batch first.

        Raises:
            ValueError: see :meth:`FlipBatch.validate`.
        """
        cache = self.encode(batch)
        return self.decode(cache, batch.query_coords, batch.query_counts.tolist())

    def encode(self, batch: FlipBatch) -> KVCache:
        """Run patch embedding, encoder layers and the mask-head key/value projection once (KV cache).

        ``batch.query_coords``/``query_counts``/``targets`` are validated but not used.
        """
        batch.validate(self.config.patch_sizes)
        enc = self.encoder
        patches = [p.float() / 255 for p in batch.patches]
        x, e, tokens = enc.sparsify(patches, batch.patch_coords, batch.patch_counts, batch.position)
        layout = SeqLayout(tokens, tokens, x.device, self.attention)
        for layer in enc.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, e, layout, use_reentrant=False)
            else:
                x = layer(x, e, layout)
        return enc.mask_extractor.prepare(x, e, batch.position, layout)

    def decode(self, cache: KVCache, query_coords: torch.Tensor, query_counts: list[int]) -> torch.Tensor:
        """Logits (Q,) for query points (Q, 2) frame M, ``query_counts[b]`` rows per sample, from a cache."""
        if query_coords.ndim != 2 or query_coords.shape[1] != 2 or sum(query_counts) != query_coords.shape[0]:
            raise ValueError(f"query_coords {tuple(query_coords.shape)} does not match query_counts "
                             f"summing to {sum(query_counts)}")
        if len(query_counts) != cache.layout.num_samples:
            raise ValueError(f"{len(query_counts)} query counts for {cache.layout.num_samples} cached samples")
        return self.encoder.mask_extractor.decode(cache, query_coords, query_counts)

    def num_parameters(self) -> int:
        """All parameters, including the frozen dead ``register_coordinates`` (as the reference counts them)."""
        return sum(p.numel() for p in self.parameters())
