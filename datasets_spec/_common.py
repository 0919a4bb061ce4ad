"""Small helpers shared by the spec modules (file reading, mask decoding, id maps, stable keys).

Nothing here knows about shards, HDF5 output, Gaussians or Ray: these are the format-side building blocks that
``load_image`` / ``load_masks`` of several specs have in common.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets_spec.base import InstanceMask, RecordError, Reject, Sample

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "read_image_file",
    "decode_image_bytes",
    "open_mask_file",
    "mask_mode",
    "resize_mask_nearest",
    "resize_mask_area",
    "size_mismatch",
    "empty_mask",
    "id_map_instances",
    "present_values",
    "split_scan",
    "remember_scan",
    "recall_scan",
    "threaded_map",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""Image file suffixes recognised by directory-scanning specs (compared lower-cased: ``.JPG`` counts)."""

_JPEG_MAGIC = b"\xff\xd8\xff"

T = TypeVar("T")
R = TypeVar("R")


def read_image_file(path: Path, *, source_id: str) -> bytes | np.ndarray:
    """Read one image file for ``DatasetSpec.load_image``.

    JPEG files come back as their unchanged bytes (the converter keeps baseline/progressive RGB JPEGs as they are
    and re-encodes the rest); any other format (PNG, BMP, TIFF) is decoded to a (H, W, 3) uint8 RGB array.

    Raises:
        RecordError: ``missing_file`` when the file does not exist, ``unreadable`` when it cannot be decoded.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RecordError("missing_file", f"{source_id}: image file {path} does not exist") from None
    except OSError as exc:
        raise RecordError("unreadable", f"{source_id}: cannot read image file {path}: {exc}") from None
    if data.startswith(_JPEG_MAGIC):
        return data
    return decode_image_bytes(data, source_id=source_id, what=str(path))


def decode_image_bytes(data: bytes, *, source_id: str, what: str) -> np.ndarray:
    """Decode encoded image bytes to a (H, W, 3) uint8 RGB array (grayscale/palette/RGBA converted by Pillow).

    Raises:
        RecordError: ``unreadable`` naming ``what`` when Pillow cannot decode the bytes (truncated, not an image).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecordError("unreadable", f"{source_id}: cannot decode image {what}: {exc}") from None


def open_mask_file(path: Path, *, source_id: str, palette_to_rgb: bool = False) -> tuple[np.ndarray, str]:
    """Decode a mask/label image file without any colour conversion (palette files: see ``palette_to_rgb``).

    Returns:
        ``(array, mode)``: the raw Pillow array ((H, W) for modes ``1``/``L``/``P``/``I;16``/``I``, (H, W, C) for
        ``RGB``/``RGBA``) and the Pillow mode string. Palette PNGs keep their indices unless ``palette_to_rgb``,
        which looks the colours up (as OpenCV's ``imread`` does) and returns mode ``RGB``.

    Raises:
        RecordError: ``missing_file`` / ``unreadable`` naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if palette_to_rgb and img.mode in ("P", "PA"):
                return np.asarray(img.convert("RGB")), "RGB"
            return np.asarray(img), img.mode
    except FileNotFoundError:
        raise RecordError("missing_file", f"{source_id}: mask file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecordError("unreadable", f"{source_id}: cannot decode mask file {path}: {exc}") from None


def mask_mode(path: Path, *, source_id: str) -> str:
    """Pillow mode of an image file from its header only (no pixel decoding).

    Raises:
        RecordError: ``missing_file`` / ``unreadable`` naming the file.
    """
    try:
        with Image.open(path) as img:
            return img.mode
    except FileNotFoundError:
        raise RecordError("missing_file", f"{source_id}: mask file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecordError("unreadable", f"{source_id}: cannot decode mask file {path}: {exc}") from None


def resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) bool/uint8 mask to (height, width) bool (Pillow ``NEAREST``)."""
    if mask.shape == (height, width):
        return mask.astype(bool, copy=False)
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127


def resize_mask_area(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (h, w) bool mask to (height, width) bool by bilinear filtering of 0/255 and thresholding at 128.

    Pillow's bilinear filter widens its support when downscaling, so this is an area-weighted vote: a pixel is
    object when at least half of the source area under it is object. Only the output rows/columns near the mask's
    bounding box are computed (Pillow's ``resize(box=...)`` keeps the full-image sampling grid and clips the filter
    at the image border, not the box), so the result equals resizing the whole mask, at a fraction of the cost
    (SA-1B 2250x1500 -> 544x352: ~30 ms -> ~9 ms for a mid-size mask). The one exception: a pixel whose filtered
    value is 127 or 128 (exactly half covered) may round the other way, because the box offsets are floats.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (height, width):
        return mask
    out = np.zeros((height, width), dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    sy, sx = mask.shape[0] / height, mask.shape[1] / width
    # Output pixels whose filter support (radius max(1, scale) source px around the centre) can reach the mask.
    y0 = max(0, int((rows[0] - max(1.0, sy)) / sy) - 1)
    y1 = min(height, int((rows[-1] + 1 + max(1.0, sy)) / sy) + 2)
    x0 = max(0, int((cols[0] - max(1.0, sx)) / sx) - 1)
    x1 = min(width, int((cols[-1] + 1 + max(1.0, sx)) / sx) + 2)
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    crop = img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    out[y0:y1, x0:x1] = np.asarray(crop) >= 128
    return out


def size_mismatch(source_id: str, what: str, got: tuple[int, ...], height: int, width: int) -> Reject:
    """The ``size_mismatch`` reject for a mask of shape ``got`` on an image of (height, width)."""
    return Reject(
        source_id=source_id,
        stage="mask",
        reason="size_mismatch",
        message=f"{source_id}: {what} is {got[1]}x{got[0]} (WxH) but the image is {width}x{height}",
    )


def empty_mask(source_id: str, what: str) -> Reject:
    """The ``empty_mask`` reject for an instance without any object pixel."""
    return Reject(source_id=source_id, stage="mask", reason="empty_mask", message=f"{source_id}: {what} has no pixel")


def present_values(ids: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer id map, as Python ints.

    Uses a counting pass (``np.bincount``, O(n)) when the value range is below 2**20, else ``np.unique`` (a sort);
    a 1408x376 uint16 KITTI-360 map takes ~1 ms instead of ~10 ms.
    """
    flat = np.asarray(ids).ravel()
    if flat.size == 0:
        return []
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < (1 << 20):
        counts = np.bincount((flat.astype(np.int64) - lo) if lo else flat, minlength=hi - lo + 1)
        return [int(v) + lo for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(flat)]


def id_map_instances(
    ids: np.ndarray,
    sources: Sequence,
    *,
    height: int,
    width: int,
    what: str,
    ignore: np.ndarray | None = None,
    min_pixels: int = 1,
) -> list[InstanceMask | Reject]:
    """Cut one instance mask per ``InstanceSource`` out of an integer id map.

    Args:
        ids: (H, W) integer id map (any integer dtype).
        sources: the sample's ``InstanceSource`` items; ``payload`` is the id value of each.
        height, width: decoded image size; a differently sized map rejects every instance (``size_mismatch``).
        what: file name used in messages.
        ignore: optional (H, W) bool ignore region shared by every instance (e.g. a void label).
        min_pixels: instances with fewer object pixels are rejected with reason ``too_small`` (``empty_mask`` at 0).

    Returns:
        One ``InstanceMask`` (mask (H, W) bool) or ``Reject`` per source, in order.
    """
    if ids.shape[:2] != (height, width) or ids.ndim != 2:
        return [size_mismatch(s.source_id, what, ids.shape, height, width) for s in sources]
    out: list[InstanceMask | Reject] = []
    for src in sources:
        mask = ids == src.payload
        count = int(mask.sum())
        if count == 0:
            out.append(empty_mask(src.source_id, f"id {src.payload} in {what}"))
        elif count < min_pixels:
            out.append(
                Reject(
                    source_id=src.source_id,
                    stage="mask",
                    reason="too_small",
                    message=f"{src.source_id}: id {src.payload} in {what} has {count} px < min_pixels={min_pixels}",
                )
            )
        else:
            out.append(
                InstanceMask(
                    source_id=src.source_id,
                    category_id=src.category_id,
                    mask=mask,
                    ignore=ignore,
                    metadata=dict(src.metadata),
                )
            )
    return out


def split_scan(items: Iterable[Sample | Reject]) -> tuple[list[Sample], list[Reject]]:
    """Split a per-record scan into usable samples and enumeration rejects.

    A sample without any instance is not usable: its own ``rejects`` move to the reject list, followed by one
    ``no_instances`` reject for the image, so nothing disappears silently.
    """
    samples: list[Sample] = []
    rejects: list[Reject] = []
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
        elif item.instances:
            samples.append(item)
        else:
            rejects.extend(item.rejects)
            rejects.append(Reject(source_id=item.source_id, stage="enumerate", reason="no_instances",
                                  message=f"{item.source_id}: no usable instance in {item.file_name}"))
    return samples, rejects


_SCANS: dict = {}
_MAX_SCANS = 8


def remember_scan(spec, result: T) -> T:
    """Keep the latest enumeration of ``spec`` (hashable frozen dataclass) for :func:`recall_scan`; returns it.

    ``samples()`` always scans afresh and remembers; ``enumeration_rejects()`` (called by the converter right
    after ``samples()``) and bucket sub-specs reuse the remembered scan instead of reading the source again. A new
    ``samples()`` call replaces it, so a source that changed on disk is never planned from a stale scan.
    """
    _SCANS.pop(spec, None)
    _SCANS[spec] = result
    while len(_SCANS) > _MAX_SCANS:
        _SCANS.pop(next(iter(_SCANS)))
    return result


def recall_scan(spec, scan: Callable[[], T]) -> T:
    """The scan remembered for ``spec`` in this process, or a fresh (remembered) one."""
    if spec in _SCANS:
        return _SCANS[spec]
    return remember_scan(spec, scan())


def threaded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 4) -> Iterator[R]:
    """``map(fn, items)`` on a small thread pool, results in input order (decoders release the GIL)."""
    items = list(items)
    if workers <= 1 or len(items) < 8:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items)
