"""FLIP architecture hyper-parameters (spec section 4.1).

:class:`FlipConfig` holds exactly the numbers that change the network's weights. How the model is *run*
(attention back-end, gradient checkpointing) is chosen on the built module, not here, because it never changes
the maths or the state dict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["FlipConfig", "SUPPORTED_PATCH_SIZES"]

SUPPORTED_PATCH_SIZES = (1, 2, 4, 8, 16)
"""Patch sizes with a patch embedding (spec 4.2). The reference also defines 32 and 64 but never uses them."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FlipConfig:
    """Shape of one FLIP network. Defaults are the reference values shared by every released size."""

    name: str
    """Short model name stored in checkpoints, e.g. ``"tiny"``."""
    channels: int
    """Latent width C of every token (must be divisible by 16: the 8/16-px embeddings split C over 16 cells)."""
    layers: int
    """Number of encoder layers L."""
    head_size: int
    """Nominal head size; heads = ``max(kq_expansion * C // head_size, 1)`` (spec 4.1)."""
    num_registers: int = 8
    """Learned register tokens R prepended to every sample."""
    min_patch_size: int = 1
    """Smallest patch side in pixels (power of two)."""
    max_patch_size: int = 16
    """Largest patch side in pixels (power of two, at most 16)."""
    alpha: float = 0.1
    """Initial value of every learnable residual scale."""
    kq_expansion: int = 1
    """Query/key width multiplier (kq)."""
    v_expansion: int = 1
    """Value width multiplier (v)."""
    mlp_expansion: int = 4
    """Feed-forward hidden width multiplier (hidden = C * m)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("FlipConfig.name must be a non-empty string")
        for field in ("channels", "layers", "head_size", "num_registers", "kq_expansion", "v_expansion",
                      "mlp_expansion"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FlipConfig.{field} must be a positive int, got {value!r}")
        if self.channels % 16:
            raise ValueError(f"FlipConfig.channels must be divisible by 16, got {self.channels}")
        sizes = (self.min_patch_size, self.max_patch_size)
        if any(s not in SUPPORTED_PATCH_SIZES for s in sizes) or sizes[0] > sizes[1]:
            raise ValueError(
                f"min/max_patch_size must be in {SUPPORTED_PATCH_SIZES} with min <= max, got {sizes}")
        if (self.kq_expansion * self.channels) % self.num_heads or (self.v_expansion * self.channels) % self.num_heads:
            raise ValueError(
                f"kq_expansion*channels={self.kq_expansion * self.channels} and v_expansion*channels="
                f"{self.v_expansion * self.channels} must both be divisible by num_heads={self.num_heads}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"FlipConfig.alpha must be finite and > 0, got {self.alpha}")

    @property
    def num_heads(self) -> int:
        """Attention heads: ``max(kq * C // head_size, 1)`` (spec 4.1)."""
        return max(self.kq_expansion * self.channels // self.head_size, 1)

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """Patch sides in pixels, smallest first: ``2**linspace(log2 min, log2 max)``."""
        lo, hi = int(math.log2(self.min_patch_size)), int(math.log2(self.max_patch_size))
        return tuple(2**i for i in range(lo, hi + 1))

    @property
    def ffn_hidden(self) -> int:
        """Feed-forward hidden width ``C * mlp_expansion``."""
        return self.channels * self.mlp_expansion

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and ``weights_only``-safe) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlipConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown FlipConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_reference_model_section(cls, model: dict[str, Any], *, name: str) -> FlipConfig:
        """Build from the ``"model"`` object of a reference ``configs/flip-*.json`` file.

        Reads ``model.encoder.{channels, layers, head_size, num_registers, alpha, kq_expansion, v_expansion,
        mlp_expansion}`` and ``model.{min_patch_size, max_patch_size}``. ``bottleneck_selection`` only picks
        ``max``/``min`` of two equal widths (spec 4.1) and is ignored; training keys (batch size, token budget)
        belong to the training config.

        Raises:
            ValueError: a required key is missing or a value is invalid.
        """
        try:
            enc = model["encoder"]
            return cls(
                name=name, channels=int(enc["channels"]), layers=int(enc["layers"]),
                head_size=int(enc["head_size"]), num_registers=int(enc["num_registers"]),
                min_patch_size=int(model.get("min_patch_size", 1)),
                max_patch_size=int(model.get("max_patch_size", 16)),
                alpha=float(enc.get("alpha", 0.1)), kq_expansion=int(enc.get("kq_expansion", 1)),
                v_expansion=int(enc.get("v_expansion", 1)), mlp_expansion=int(enc.get("mlp_expansion", 4)),
            )
        except KeyError as exc:
            raise ValueError(f"reference model config lacks key {exc.args[0]!r}") from None
