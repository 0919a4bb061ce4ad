"""COCO instance segmentation, ``flip convert coco --images DIR --annotations FILE --out DIR``.

Expected layout (the official COCO 2017 release, or any tool writing the same JSON)::

    IMAGES/                              --images: the folder that file_name is relative to
      000000000139.jpg ...               (file_name may contain sub-folders, e.g. labelme's JPEGImages/x.jpg)
    ANNOTATIONS.json                     --annotations: instances_<split>.json
      {"images":      [{"id", "file_name", "width", "height", ["license", "coco_url", "flickr_url", ...]}],
       "annotations": [{"id", "image_id", "category_id", "segmentation", ["iscrowd", "area", "bbox"]}],
       "categories":  [{"id", "name", ...}], ["licenses": [...]], ["info": {...}]}

Segmentations: a list of polygons (``[x0, y0, x1, y1, ...]`` in pixel coordinates; several polygons of one object
are merged with ``pycocotools.mask.merge``), an uncompressed RLE (``{"size": [h, w], "counts": [int, ...]}``) or a
compressed RLE (``counts`` a string). Decoding is pycocotools' (like the reference converter, spec 1.3).

What is skipped, each with a row in ``rejects.parquet``: ``iscrowd`` annotations unless ``--keep-crowd``
(``crowd``); polygons with fewer than 3 points (``polygon_lt_3_points``: one row per dropped polygon, or one for
the annotation when none is left); polygons with non-numeric or odd-length coordinates (``bad_polygon``);
annotations of an image id that does not exist (``unknown_image``); ``file_name`` escaping ``--images``
(``path_escape``); RLEs whose size differs from the image or whose counts do not cover it (``rle_size_mismatch``,
``bad_rle``); plus what the converter checks for every format (missing/unreadable files, size mismatch, empty
masks, decompression bombs). A JSON that does not parse, or lacks a required key, stops the run before any shard is
written, with the JSON path of the problem in the message (``SpecError``).

Keys: ``Sample.key`` = ``image.id``; source ids are ``coco/img/<id>`` and ``coco/ann/<id>`` (``<name>`` instead of
``coco`` when ``--name`` is given). The shard ``metadata`` group gets ``coco_licenses`` and ``coco_categories``
(JSON) like the reference's ``coco_licenses``; ``dataset_name`` defaults to ``coco-<split>`` and ``type`` to
``<split>``, the split taken from ``instances_<split>.json`` (spec 1.1).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError, resolve_under

logger = logging.getLogger(__name__)

__all__ = ["CocoSpec", "load_annotation_json", "add_cli_arguments", "from_cli_args", "decode_segmentation"]

_SPLIT = re.compile(r"(?:instances|lvis)_(?P<split>[A-Za-z0-9_.-]+?)(?:\.present_subset)?\.json$")


def load_annotation_json(path: Path) -> dict:
    """Parse an annotation file. Raises SpecError naming the file (and line/column) when it is not valid JSON."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{path}: annotation file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: $: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _require(obj: Any, key: str, types: type | tuple[type, ...], where: str, path: Path) -> Any:
    """``obj[key]`` checked to be one of ``types`` (bool never counts as int); SpecError with the JSON path."""
    if not isinstance(obj, dict):
        raise SpecError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise SpecError(f"{path}: {where}.{key}: missing required key")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, types):
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise SpecError(f"{path}: {where}.{key}: expected {names}, got {type(value).__name__} {value!r:.60}")
    return value


def _require_list(data: dict, key: str, path: Path) -> list:
    return _require(data, key, list, "$", path)


class CocoSpec:
    """COCO-format instance annotations (see the module docstring for the layout and reject reasons).

    Picklable and light: the parsed JSON is cached on the driver only (``samples()``) and dropped when the spec is
    sent to Ray workers, which need nothing but the paths.
    """

    source_prefix = "coco"

    def __init__(
        self,
        *,
        images: str | Path,
        annotations: str | Path,
        name: str | None = None,
        keep_crowd: bool = False,
    ):
        self.images = Path(images)
        self.annotations = Path(annotations)
        split = self.split_name(self.annotations)
        self.name = name or f"{self.source_prefix}-{split}"
        self.dataset_type = split
        self.prefix = name or self.source_prefix
        self.keep_crowd = keep_crowd
        self._data: dict | None = None
        self._enum_rejects: list[Reject] = []

    @staticmethod
    def split_name(annotations: Path) -> str:
        match = _SPLIT.search(Path(annotations).name)
        return match.group("split") if match else Path(annotations).stem

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None
        state["_enum_rejects"] = []
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(images={str(self.images)!r}, annotations={str(self.annotations)!r}, name={self.name!r})"

    # -- enumeration (driver) ----------------------------------------------------------------------------------
    def _load(self) -> dict:
        if self._data is None:
            data = load_annotation_json(self.annotations)
            self._validate(data)
            self._data = data
        return self._data

    def _validate(self, data: dict) -> None:
        path = self.annotations
        images = _require_list(data, "images", path)
        annotations = _require_list(data, "annotations", path)
        for key in ("categories", "licenses"):
            if data.get(key) is not None and not isinstance(data[key], list):
                raise SpecError(f"{path}: $.{key}: expected a list, got {type(data[key]).__name__}")
        seen: set[int] = set()
        for i, img in enumerate(images):
            where = f"$.images[{i}]"
            image_id = _require(img, "id", int, where, path)
            if "file_name" in img or self._needs_file_name():
                _require(img, "file_name", str, where, path)
            _require(img, "width", int, where, path)
            _require(img, "height", int, where, path)
            if image_id in seen:
                raise SpecError(f"{path}: {where}.id: duplicate image id {image_id}")
            seen.add(image_id)
        for i, ann in enumerate(annotations):
            where = f"$.annotations[{i}]"
            _require(ann, "id", int, where, path)
            _require(ann, "image_id", int, where, path)
            _require(ann, "segmentation", (list, dict), where, path)
            if "category_id" in ann:
                _require(ann, "category_id", int, where, path)

    def _needs_file_name(self) -> bool:
        return True

    def samples(self) -> Iterator[Sample]:
        """One :class:`Sample` per image record, in file order. Raises SpecError on a malformed file."""
        data = self._load()
        by_image: dict[int, list[dict]] = defaultdict(list)
        known = {img["id"] for img in data["images"]}
        rejects = []
        for ann in data["annotations"]:
            if ann["image_id"] in known:
                by_image[ann["image_id"]].append(ann)
            else:
                rejects.append(self._reject(ann, "unknown_image", f"annotation {ann['id']} refers to image id "
                                            f"{ann['image_id']}, which is not in {self.annotations.name}"))
        for img in data["images"]:
            sample = self._sample(img, by_image.get(img["id"], []), rejects)
            if sample is not None:
                yield sample
        self._enum_rejects = rejects

    def enumeration_rejects(self) -> list[Reject]:
        """Rejects of records that belong to no sample (unknown images, escaping paths); valid after ``samples()``."""
        return list(self._enum_rejects)

    def file_metadata(self) -> dict[str, str]:
        data = self._load()
        return {
            "type": self.dataset_type,
            "coco_licenses": json.dumps(data.get("licenses") or [], sort_keys=True),
            "coco_categories": json.dumps(data.get("categories") or [], sort_keys=True),
        }

    def _reject(self, ann: Mapping, reason: str, message: str, suffix: str = "") -> Reject:
        sid = f"{self.prefix}/ann/{ann['id']}{suffix}"
        return Reject(source_id=sid, stage="enumerate", reason=reason, message=f"{sid}: {message}")

    def _image_path(self, img: dict, source_id: str) -> tuple[Path, dict]:
        """Resolved image file and extra payload; raises RecordError(path_escape)."""
        return resolve_under(self.images, img["file_name"], source_id=source_id), {}

    def _image_metadata(self, img: dict) -> dict:
        return {k: img[k] for k in ("coco_url", "flickr_url", "date_captured") if img.get(k)}

    def _sample(self, img: dict, anns: list[dict], rejects: list[Reject]) -> Sample | None:
        source_id = f"{self.prefix}/img/{img['id']}"
        try:
            path, payload = self._image_path(img, source_id)
        except RecordError as exc:
            rejects.append(Reject(source_id=source_id, stage="enumerate", reason=exc.reason,
                                  message=f"{exc} ({len(anns)} annotations dropped with the image)"))
            return None
        instances, sample_rejects = [], []
        for ann in anns:
            inst = self._instance(ann, sample_rejects)
            if inst is not None:
                instances.append(inst)
        license_id = img.get("license")
        return Sample(
            key=int(img["id"]),
            source_id=source_id,
            file_name=img.get("file_name") or str(path.relative_to(self.images.resolve())),
            image_path=path,
            width=img["width"],
            height=img["height"],
            license_id=license_id if isinstance(license_id, int) and 0 <= license_id <= 255 else 0,
            instances=tuple(instances),
            payload=payload or None,
            metadata=self._image_metadata(img),
            rejects=tuple(sample_rejects),
        )

    def _instance_metadata(self, ann: dict) -> dict:
        return {"iscrowd": 1} if ann.get("iscrowd") else {}

    def _instance(self, ann: dict, rejects: list[Reject]) -> InstanceSource | None:
        if ann.get("iscrowd") and not self.keep_crowd:
            rejects.append(self._reject(ann, "crowd", "iscrowd annotation skipped (use --keep-crowd to keep it)"))
            return None
        seg = ann["segmentation"]
        if isinstance(seg, list):
            payload = self._polygons(ann, seg, rejects)
            if payload is None:
                return None
        else:
            payload = ("rle", seg)
        return InstanceSource(
            source_id=f"{self.prefix}/ann/{ann['id']}",
            category_id=int(ann.get("category_id", -1)),
            payload=payload,
            metadata=self._instance_metadata(ann),
        )

    def _polygons(self, ann: dict, seg: list, rejects: list[Reject]) -> tuple | None:
        """Valid rings as float lists. Rings with < 3 points or malformed coordinates are dropped, each with a
        reject row (for the whole annotation when it had a single polygon)."""
        rings, problems = [], []
        for k, ring in enumerate(seg):
            numbers = isinstance(ring, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ring
            )
            if not numbers or len(ring) % 2:
                problems.append((k, "bad_polygon", f"not an even-length list of finite numbers: {str(ring)[:60]}"))
            elif len(ring) < 6:
                problems.append((k, "polygon_lt_3_points", f"{len(ring) // 2} point(s), fewer than 3"))
            else:
                rings.append([float(v) for v in ring])
        if not seg:
            rejects.append(self._reject(ann, "empty_segmentation", "segmentation is an empty list"))
        elif len(seg) == 1 and problems:
            _, reason, detail = problems[0]
            rejects.append(self._reject(ann, reason, f"its only polygon is unusable: {detail}"))
        else:
            for k, reason, detail in problems:
                rejects.append(self._reject(ann, reason, f"polygon {k} dropped: {detail}", suffix=f"#poly{k}"))
            if not rings:
                rejects.append(self._reject(ann, "no_valid_polygon", f"none of its {len(seg)} polygons is usable"))
        return ("polygons", rings) if rings else None

    # -- workers -------------------------------------------------------------------------------------------------
    def load_image(self, sample: Sample) -> bytes:
        """The image file's bytes. Raises RecordError ``missing_file`` / ``unreadable`` naming the file."""
        try:
            return sample.image_path.read_bytes()
        except FileNotFoundError:
            raise RecordError("missing_file", f"{sample.source_id}: image file {sample.image_path} does not exist"
                              f"{self._missing_hint(sample)}") from None
        except OSError as exc:
            raise RecordError("unreadable", f"{sample.source_id}: cannot read {sample.image_path}: {exc}") from None

    def _missing_hint(self, sample: Sample) -> str:
        return ""

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        """Decode every instance at ``height x width``; RLE problems come back as Reject items."""
        out: list[InstanceMask | Reject] = []
        for inst in sample.instances:
            try:
                mask = decode_segmentation(inst.payload, height, width, source_id=inst.source_id)
            except RecordError as exc:
                out.append(Reject(source_id=inst.source_id, stage="mask", reason=exc.reason, message=str(exc)))
                continue
            out.append(InstanceMask(source_id=inst.source_id, category_id=inst.category_id, mask=mask,
                                    metadata=inst.metadata))
        return out


def _rle_string_total(counts: str) -> int:
    """Sum of the run lengths of a compressed COCO RLE string (the format of ``maskApi.c:rleFrString``).

    Used only to validate the string before pycocotools decodes it (its decoder does not bounds-check). Raises
    ValueError on a negative run or a truncated string.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("truncated RLE string")
            c = ord(counts[pos]) - 48
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and (c & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"negative run length {value}")
        runs.append(value)
    return sum(runs)


def decode_segmentation(payload: tuple, height: int, width: int, *, source_id: str) -> np.ndarray:
    """Decode a COCO segmentation payload to an (H, W) uint8 {0, 1} mask with pycocotools.

    Args:
        payload: ``("polygons", [[x0, y0, ...], ...])`` or ``("rle", {"size": [h, w], "counts": list | str})``.
        height, width: size of the decoded image (annotation coordinates are pixels of that image).

    Raises:
        RecordError: ``rle_size_mismatch`` (RLE size differs from the image), ``bad_rle`` (malformed counts).
    """
    kind, seg = payload
    if kind == "polygons":
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        return mask_utils.decode(rle)
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise RecordError("bad_rle", f"{source_id}: RLE 'size' must be [height, width], got {size!r:.60}")
    if list(size) != [height, width]:
        raise RecordError("rle_size_mismatch", f"{source_id}: RLE size {size} does not match the image "
                          f"size [{height}, {width}] (height, width)")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise RecordError("bad_rle", f"{source_id}: uncompressed RLE counts must be non-negative integers summing "
                              f"to {height * width}")
        rle = mask_utils.frPyObjects(seg, height, width)
    elif isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        try:
            total = _rle_string_total(text)
        except ValueError as exc:
            raise RecordError("bad_rle", f"{source_id}: malformed compressed RLE: {exc}") from None
        if total != height * width:
            raise RecordError("bad_rle", f"{source_id}: compressed RLE covers {total} pixels, expected {height * width}")
        rle = {"size": [height, width], "counts": text.encode("ascii")}
    else:
        raise RecordError("bad_rle", f"{source_id}: RLE 'counts' must be a list or a string")
    return mask_utils.decode(rle)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``--images``, ``--annotations``, ``--name``, ``--keep-crowd``."""
    parser.add_argument("--images", type=Path, required=True, help="image folder that file_name is relative to")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances JSON file")
    parser.add_argument("--name", default=None, help="dataset name (default coco-<split> from the JSON file name)")
    parser.add_argument("--keep-crowd", action="store_true", help="keep iscrowd annotations (skipped by default)")


def from_cli_args(args: argparse.Namespace) -> CocoSpec:
    return CocoSpec(images=args.images, annotations=args.annotations, name=args.name, keep_crowd=args.keep_crowd)
