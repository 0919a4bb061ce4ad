"""Named FLIP sizes (spec 4.1 table): one private builder, four public ones and a name -> builder dict.

| name | C | layers | head_size (heads) | registers | parameters |
|---|---|---|---|---|---|
| tiny | 64 | 3 | 16 (4) | 8 | 513,804 |
| small | 128 | 5 | 32 (4) | 8 | 2,344,690 |
| middle | 256 | 8 | 32 (8) | 8 | 11,518,267 |
| large | 512 | 24 | 32 (16) | 8 | 96,624,875 |
"""

from __future__ import annotations

from typing import Callable

import torch

from flip_core.model.config import FlipConfig
from flip_core.model.flip import Flip

__all__ = [
    "FLIP_CONFIGS", "FLIP_MODELS", "build_flip_model", "build_flip_from_config", "build_flip_tiny",
    "build_flip_small", "build_flip_middle", "build_flip_large",
]

FLIP_CONFIGS: dict[str, FlipConfig] = {
    "tiny": FlipConfig(name="tiny", channels=64, layers=3, head_size=16),
    "small": FlipConfig(name="small", channels=128, layers=5, head_size=32),
    "middle": FlipConfig(name="middle", channels=256, layers=8, head_size=32),
    "large": FlipConfig(name="large", channels=512, layers=24, head_size=32),
}
"""The released sizes (``configs/flip-*.json``)."""


def build_flip_from_config(config: FlipConfig, *, seed: int | None = None, attention: str = "auto",
                           gradient_checkpointing: bool = False) -> Flip:
    """Build a :class:`Flip` for any valid config.

    Args:
        config: architecture.
        seed: when given, initial weights are drawn from ``torch.manual_seed(seed)`` inside ``fork_rng`` (the
            global RNG state is left untouched); None draws from the global torch RNG.
        attention: attention back-end name.
        gradient_checkpointing: recompute encoder layers in backward.
    """
    if seed is None:
        return Flip(config, attention=attention, gradient_checkpointing=gradient_checkpointing)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Flip(config, attention=attention, gradient_checkpointing=gradient_checkpointing)


def _build_flip(name: str, **kwargs) -> Flip:
    return build_flip_from_config(FLIP_CONFIGS[name], **kwargs)


def build_flip_tiny(**kwargs) -> Flip:
    """FLIP-tiny, 513,804 parameters. kwargs: see :func:`build_flip_from_config`."""
    return _build_flip("tiny", **kwargs)


def build_flip_small(**kwargs) -> Flip:
    """FLIP-small, 2,344,690 parameters."""
    return _build_flip("small", **kwargs)


def build_flip_middle(**kwargs) -> Flip:
    """FLIP-middle, 11,518,267 parameters."""
    return _build_flip("middle", **kwargs)


def build_flip_large(**kwargs) -> Flip:
    """FLIP-large, 96,624,875 parameters."""
    return _build_flip("large", **kwargs)


FLIP_MODELS: dict[str, Callable[..., Flip]] = {
    "tiny": build_flip_tiny, "small": build_flip_small, "middle": build_flip_middle, "large": build_flip_large,
}


def build_flip_model(name: str, **kwargs) -> Flip:
    """Build a released size by name (``tiny``, ``small``, ``middle``, ``large``; a ``flip-`` prefix is accepted).

    Raises:
        ValueError: unknown name, listing the valid ones.
    """
    key = name.removeprefix("flip-")
    if key not in FLIP_MODELS:
        raise ValueError(f"unknown FLIP model {name!r}; valid: {sorted(FLIP_MODELS)}")
    return FLIP_MODELS[key](**kwargs)
