"""Deterministic shard planning: samples sorted by key, ``shard_size`` consecutive images per shard."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from datasets_spec.base import Sample, SpecError
from flip_core.shards import SHARD_FORMAT_VERSION

__all__ = ["ShardPlan", "plan_shards", "shard_file_name"]


def shard_file_name(index: int) -> str:
    """``shard-NNNNN.h5`` (five digits, more when needed)."""
    return f"shard-{index:05d}.h5"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardPlan:
    """What one Ray task converts."""

    index: int
    """Shard number (position in the plan)."""
    file_name: str
    """``shard-NNNNN.h5``."""
    samples: tuple[Sample, ...]
    """The shard's samples, sorted by key."""
    fingerprint: str
    """sha256 of everything that determines the shard's bytes (settings + the samples' full content)."""


def plan_shards(samples: Iterable[Sample], *, shard_size: int, settings: dict) -> list[ShardPlan]:
    """Sort samples by ``Sample.key`` and cut them into shards of ``shard_size`` images.

    Args:
        samples: everything the spec enumerated.
        shard_size: images per shard (the last shard may be smaller), >= 1.
        settings: JSON-serialisable conversion settings that change shard bytes (dataset name, type, file metadata,
            pixel limit); part of every fingerprint so that a rerun with other settings redoes the shards.

    Raises:
        SpecError: two samples share a key (keys are the shards' ``coco_image_ids`` and must be unique).
        ValueError: ``shard_size < 1``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = sorted(samples, key=lambda s: s.key)
    for a, b in zip(ordered, ordered[1:]):
        if a.key == b.key:
            raise SpecError(f"duplicate sample key {a.key}: {a.source_id} and {b.source_id}")
    base = json.dumps({"shard_format": SHARD_FORMAT_VERSION, **settings}, sort_keys=True, default=str)
    plans = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        chunk = tuple(ordered[start : start + shard_size])
        digest = hashlib.sha256(base.encode())
        digest.update(f"|{index}|{shard_size}|".encode())
        for sample in chunk:
            digest.update(repr(sample).encode())
        plans.append(ShardPlan(index=index, file_name=shard_file_name(index), samples=chunk, fingerprint=digest.hexdigest()))
    return plans
