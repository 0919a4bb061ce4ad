"""The work of one shard: load, check and encode each sample, write the shard, record completion.

Runs inside a Ray task (``flip_core.convert.convert_dataset``) but is plain Python, callable directly in tests.
A shard whose completion record (``_state/shard-NNNNN.json``) matches the plan's fingerprint and whose file still
has the recorded sha256 is not redone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets_spec.base import DatasetSpec, InstanceMask, RecordError, Reject, Sample
from flip_core.convert.plan import ShardPlan
from flip_core.gaussian import mask_moments
from flip_core.images import encode_mask_png, prepare_image
from flip_core.manifest import manifest_rows, write_json_atomic
from flip_core.shards import ShardImage, ShardInstance, sha256_file, write_shard

logger = logging.getLogger(__name__)

__all__ = ["ShardSettings", "ShardResult", "build_image", "build_instance", "convert_shard", "state_path"]

STATE_DIR = "_state"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardSettings:
    """Per-run settings every shard task needs."""

    out_dir: str
    dataset_name: str
    dataset_type: str
    file_metadata: dict
    max_pixels: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardResult:
    """What a shard task returns to the driver."""

    index: int
    file_name: str
    sha256: str
    images: int
    instances: int
    rejects: list[dict]
    """Reject rows (``source_id, stage, reason, message, shard``)."""
    manifest: pa.Table
    skipped: bool
    """True when the shard already existed, verified, and was not rewritten."""
    first_key: int | None
    last_key: int | None


def state_path(out_dir: Path, plan: ShardPlan) -> Path:
    return Path(out_dir) / STATE_DIR / f"{Path(plan.file_name).stem}.json"


def _reject_row(reject: Reject, shard: str) -> dict:
    return {**asdict(reject), "shard": shard}


def _bounding_crop(mask: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """``(row0, col0, crop)`` of the pixels ``> 0.5`` (crop as bool), or None for an empty mask.

    Same box as ``gaussian.mask_bbox(mask > 0.5)`` but cheaper: bool and unsigned masks (the usual case) are scanned
    as they are (``!= 0`` equals ``> 0.5`` for them), rows first, then only the band of rows that has pixels.
    """
    if mask.dtype != bool and mask.dtype.kind != "u":
        mask = mask > 0.5
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    r0, r1 = int(rows[0]), int(rows[-1])
    cols = np.flatnonzero(mask[r0 : r1 + 1].any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1])
    return r0, c0, mask[r0 : r1 + 1, c0 : c1 + 1] != 0


def build_instance(item: InstanceMask, height: int, width: int) -> ShardInstance | Reject:
    """Encode one decoded instance: PNG {0,255}, bbox (frame P), moments (frame N, spec 1.2), pixel area.

    The mask is binarised as ``> 0.5`` (the Gaussian's threshold, spec 1.2); the bbox is the inclusive box of that
    binary mask (for binary masks the same as the reference's ``> 0.75``, but counting row/column 0, spec 9.6).
    Everything is computed on the bounding crop: bit-identical PNG bytes, moments equal to the full-image
    computation up to float64 summation order. Rejects ``mask_shape`` (wrong size) and ``empty_mask``.
    """
    mask = np.asarray(item.mask)
    if mask.shape != (height, width):
        return Reject(source_id=item.source_id, stage="mask", reason="mask_shape",
                      message=f"{item.source_id}: mask shape {mask.shape} differs from the image ({height}, {width})")
    found = _bounding_crop(mask)
    if found is None:
        return Reject(source_id=item.source_id, stage="mask", reason="empty_mask",
                      message=f"{item.source_id}: the decoded mask has no pixel inside the {width}x{height} image")
    y0, x0, crop = found
    ignore_png = b""
    if item.ignore is not None:
        ignore = np.asarray(item.ignore)
        if ignore.shape != (height, width):
            return Reject(source_id=item.source_id, stage="mask", reason="mask_shape",
                          message=f"{item.source_id}: ignore mask shape {ignore.shape} differs from ({height}, {width})")
        ignore_png = encode_mask_png(ignore) if ignore.any() else b""
    return ShardInstance(
        mask_png=encode_mask_png(crop, origin=(y0, x0), image_shape=(height, width)),
        bbox=np.array([x0, y0, x0 + crop.shape[1] - 1, y0 + crop.shape[0] - 1], dtype=np.float32),
        moments=mask_moments(crop, origin=(y0, x0), image_shape=(height, width)),
        category_id=int(item.category_id),
        area_px=int(np.count_nonzero(crop)),
        source_id=item.source_id,
        ignore_png=ignore_png,
        metadata_json=json.dumps(dict(item.metadata), sort_keys=True, default=str),
    )


def _load(spec: DatasetSpec, sample: Sample, max_pixels: int):
    raw = spec.load_image(sample)
    enc = prepare_image(raw, source_id=sample.source_id, max_pixels=max_pixels)
    if sample.width is not None and sample.height is not None and (enc.width, enc.height) != (sample.width, sample.height):
        raise RecordError(
            "size_mismatch",
            f"{sample.source_id}: image {sample.file_name} is {enc.width}x{enc.height} but the annotations say "
            f"{sample.width}x{sample.height} (width x height)",
        )
    if enc.width < 2 or enc.height < 2:
        raise RecordError("too_small", f"{sample.source_id}: image {enc.width}x{enc.height} is smaller than 2x2")
    return enc, spec.load_masks(sample, enc.height, enc.width)


def build_image(spec: DatasetSpec, sample: Sample, *, max_pixels: int) -> tuple[ShardImage | None, list[Reject]]:
    """Convert one sample. Never raises for bad data: every problem becomes a :class:`Reject`.

    Returns:
        ``(image, rejects)``; ``image`` is None when the image itself is rejected or has no valid instance
        (``no_instances``, like the reference, spec 1.3).
    """
    rejects = list(sample.rejects)
    try:
        enc, items = _load(spec, sample, max_pixels)
    except RecordError as exc:
        rejects.append(Reject(source_id=sample.source_id, stage="image", reason=exc.reason, message=str(exc)))
        return None, rejects
    except Exception as exc:  # a bug or an unforeseen input: reject this record, keep the run going
        logger.exception("%s: unexpected error", sample.source_id)
        rejects.append(Reject(source_id=sample.source_id, stage="image", reason="error",
                              message=f"{sample.source_id}: unexpected {type(exc).__name__}: {exc}"))
        return None, rejects
    instances = []
    for item in items:
        built = item if isinstance(item, Reject) else build_instance(item, enc.height, enc.width)
        (rejects if isinstance(built, Reject) else instances).append(built)
    if not instances:
        rejects.append(Reject(source_id=sample.source_id, stage="image", reason="no_instances",
                              message=f"{sample.source_id}: no valid instance left ({len(sample.instances)} enumerated)"))
        return None, rejects
    meta = dict(sample.metadata)
    image = ShardImage(
        image_id=int(sample.key),
        file_name=sample.file_name,
        jpeg=enc.data,
        encoding=enc.encoding,
        source_format=enc.source_format,
        width=enc.width,
        height=enc.height,
        source_id=sample.source_id,
        license_id=int(sample.license_id) if 0 <= int(sample.license_id) <= 255 else 0,
        flickr_url=str(meta.get("flickr_url") or ""),
        coco_url=str(meta.get("coco_url") or ""),
        metadata_json=json.dumps(meta, sort_keys=True, default=str),
        instances=tuple(instances),
    )
    return image, rejects


def _completed(plan: ShardPlan, settings: ShardSettings) -> dict | None:
    """The completion record when the shard is done and intact, else None."""
    record_path = state_path(Path(settings.out_dir), plan)
    shard_path = Path(settings.out_dir) / plan.file_name
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != plan.fingerprint or not shard_path.is_file():
        return None
    if sha256_file(shard_path) != record.get("sha256"):
        logger.warning("%s: sha256 differs from its completion record; converting it again", shard_path)
        return None
    return record


def convert_shard(spec: DatasetSpec, plan: ShardPlan, settings: ShardSettings) -> ShardResult:
    """Convert (or verify and skip) one planned shard; returns its counts, rejects and manifest rows."""
    out_dir = Path(settings.out_dir)
    shard_path = out_dir / plan.file_name
    record = _completed(plan, settings)
    skipped = record is not None
    if record is None:
        images, rejects = [], []
        for sample in plan.samples:
            image, sample_rejects = build_image(spec, sample, max_pixels=settings.max_pixels)
            rejects += [_reject_row(r, plan.file_name) for r in sample_rejects]
            if image is not None:
                images.append(image)
        digest = write_shard(shard_path, images, dataset_name=settings.dataset_name,
                             dataset_type=settings.dataset_type, file_metadata=settings.file_metadata)
        record = {
            "fingerprint": plan.fingerprint,
            "file": plan.file_name,
            "sha256": digest,
            "images": len(images),
            "instances": sum(len(im.instances) for im in images),
            "rejects": rejects,
        }
        state_path(out_dir, plan).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, state_path(out_dir, plan))
    return ShardResult(
        index=plan.index,
        file_name=plan.file_name,
        sha256=record["sha256"],
        images=record["images"],
        instances=record["instances"],
        rejects=record["rejects"],
        manifest=manifest_rows(shard_path, settings.dataset_name),
        skipped=skipped,
        first_key=plan.samples[0].key if plan.samples else None,
        last_key=plan.samples[-1].key if plan.samples else None,
    )
