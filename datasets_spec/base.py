"""The one contract every dataset format implements.

A *spec* knows a source format and nothing about HDF5, shards, Gaussians or Ray. The shared converter
(``flip_core.convert``) does everything else, identically for every format:

1. ``spec.samples()`` enumerates :class:`Sample` records: cheap, picklable descriptions of one image and its
   instances (paths, annotation payloads), in any order. The converter sorts them by ``Sample.key`` and plans
   shards. Malformed annotation files raise :class:`SpecError` here, before any shard is written.
2. In a Ray task per shard, for each sample: ``spec.load_image(sample)`` returns the encoded image bytes (kept
   unchanged when they are a baseline/progressive RGB JPEG) or a decoded (H, W, 3) uint8 array, then
   ``spec.load_masks(sample, height, width)`` returns one :class:`InstanceMask` or :class:`Reject` per instance.
   Per-record problems raise :class:`RecordError` (the whole image is rejected with that reason) or come back as
   :class:`Reject` items (one instance is rejected); the run continues.

Records that the spec itself skips while enumerating (crowd annotations, annotations of unknown images, ...) are
reported through ``Sample.rejects`` or :meth:`DatasetSpec.enumeration_rejects`, so nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "SpecError",
    "RecordError",
    "Reject",
    "InstanceSource",
    "Sample",
    "InstanceMask",
    "DatasetSpec",
    "resolve_under",
]


class SpecError(ValueError):
    """The source as a whole is unusable (malformed JSON, missing required keys). Stops the run before writing."""


class RecordError(Exception):
    """One image record is unusable; ``reason`` is a short machine-friendly tag, ``str(exc)`` the human message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True, slots=True)
class Reject:
    """One skipped image or instance, written as a row of ``rejects.parquet``."""

    source_id: str
    """Stable id of the skipped record, e.g. ``"coco/ann/1234"`` or ``"coco/img/139"``."""
    stage: str
    """Where it was skipped: ``"enumerate"``, ``"image"``, ``"mask"``, ``"gaussian"``."""
    reason: str
    """Short tag, e.g. ``"crowd"``, ``"missing_file"``, ``"size_mismatch"``, ``"empty_mask"``."""
    message: str = ""
    """Human-readable detail naming the file or record."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceSource:
    """One instance as enumerated: an annotation payload that ``load_masks`` knows how to decode."""

    source_id: str
    """Stable id of the annotation, e.g. ``"coco/ann/1234"``."""
    category_id: int = -1
    """Category id in the source's label space; -1 when the format has none."""
    payload: Any = None
    """Format-specific data needed to decode the mask (polygon rings, an RLE dict, a file path, an id value...)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """JSON-serialisable extra fields kept in the manifest (e.g. LVIS frequency)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One image and its instances, as a spec enumerates it."""

    key: int
    """Sort key and the ``coco_image_ids`` value: the source's integer image id, or a stable integer derived from it."""
    source_id: str
    """Stable id of the image record, e.g. ``"coco/img/139"``."""
    file_name: str
    """Display name stored in ``file_names`` (relative path inside the source)."""
    image_path: Path | None = None
    """Resolved image file, when the image is a file; formats with other containers use ``payload``."""
    width: int | None = None
    """Width declared by the annotations (checked against the decoded image), or None if the format declares none."""
    height: int | None = None
    """Height declared by the annotations, or None."""
    license_id: int = 0
    """Source licence id (COCO ``image.license``), 0 when unknown."""
    instances: tuple[InstanceSource, ...] = ()
    """The instances to decode, in source order."""
    payload: Any = None
    """Format-specific data for ``load_image`` / ``load_masks`` (tar member, frame index...)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """JSON-serialisable extra fields (e.g. ``coco_url``, ``flickr_url``, LVIS ``neg_category_ids``)."""
    rejects: tuple[Reject, ...] = ()
    """Instances the spec skipped while enumerating (crowd, degenerate polygon...), reported by the converter."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceMask:
    """A decoded instance mask."""

    source_id: str
    category_id: int
    mask: np.ndarray
    """(H, W) bool or uint8 {0, 1}: the object."""
    ignore: np.ndarray | None = None
    """(H, W) bool: pixels evaluation must ignore (GrabCut's 128 band, DAVIS void), or None."""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class DatasetSpec(Protocol):
    """What every ``datasets_spec.<format>`` module provides (as a picklable object, sent to Ray tasks)."""

    name: str
    """Dataset name stored in the shard ``metadata`` group and the manifest, e.g. ``"coco-val2017"``."""

    def samples(self) -> Iterator[Sample]:
        """Enumerate every image record. Raises :class:`SpecError` when the source is malformed."""
        ...

    def enumeration_rejects(self) -> list[Reject]:
        """Records skipped while enumerating that belong to no sample (e.g. annotations of unknown images)."""
        ...

    def file_metadata(self) -> dict[str, str]:
        """Extra string attributes for the shard ``metadata`` group (e.g. ``coco_licenses`` as JSON)."""
        ...

    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        """Encoded image bytes as stored in the source, or a decoded (H, W, 3) uint8 RGB array.

        Raises :class:`RecordError` (``missing_file``, ``unreadable``...) for this record.
        """
        ...

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        """Decode every instance of ``sample`` at the decoded image size, one item per instance."""
        ...


def resolve_under(root: Path, relative: str, *, source_id: str) -> Path:
    """Resolve ``relative`` inside ``root`` and refuse anything that escapes it (``../``, absolute paths, symlinks out).

    Raises:
        RecordError: reason ``"path_escape"`` naming the record and the offending path.
    """
    root = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise RecordError("path_escape", f"{source_id}: file_name {relative!r} is an absolute path")
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise RecordError("path_escape", f"{source_id}: file_name {relative!r} escapes the image root {root}")
    return target
