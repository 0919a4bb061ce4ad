"""SA-1B (Segment Anything 1B), ``flip convert sa1b --root DIR --out DIR [--bucketing]``.

Expected layout (SA-1B download: ``sa_NNNNNN.tar`` files; segment-anything README "Dataset")::

    DIR/
      sa_000000.tar ...          each holds sa_{image_id}.jpg + sa_{image_id}.json pairs (read in place, no extraction)
      or, extracted, anywhere below DIR:
      sa_{image_id}.jpg + sa_{image_id}.json

Per-image JSON::

    {"image": {"image_id": int, "width": int, "height": int, "file_name": str},
     "annotations": [{"id": int, "segmentation": {"size": [h, w], "counts": str},   # COCO RLE (pycocotools)
                      "bbox": [x, y, w, h], "area": int, "predicted_iou": float, "stability_score": float,
                      "crop_box": [x, y, w, h], "point_coords": [[x, y]]}, ...]}

Every annotation is one instance (category id -1); ``predicted_iou``, ``stability_score`` and ``area`` are kept as
metadata. Keys are ``image.image_id``. Rejects: a tar member cut short (``truncated``: the rest of that tar is
skipped and reported), a JSON that does not parse or lacks ``image``/``annotations`` (``malformed_json``), a JPEG
without JSON or the reverse (``missing_file``), an RLE whose ``size`` differs from the image (``size_mismatch``).

Resolution bucketing (``--bucketing``; ``../shared/reference/flip-spec.md`` 1.4, inferred from the reference's
training file names ``...-merged-{H}x{W}.hdf5``): each image is resized so its short side is 352 and its long side
is ``round(long * 352 / short / 32) * 32`` (at least 352), and every bucket (H, W) is written as its own dataset
``{name}-{H}x{W}`` (``SA1BSpec.buckets()`` returns one spec per bucket). The image is resized with Pillow's
bilinear filter (antialiased when shrinking); masks are decoded at the original size and resized by area vote
(``datasets_spec._common.resize_mask_area``); a mask that vanishes is rejected (``empty_mask``). Unknown from the
reference: what "whole masks only, merged" in its file names means; no such filter is applied here.

Enumeration reads every JSON once (needed for the instance count and, with bucketing, the image size).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from datasets_spec._common import (
    decode_image_bytes,
    empty_mask,
    recall_scan,
    remember_scan,
    resize_mask_area,
    split_scan,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

__all__ = ["SA1BSpec", "SA1BBucketSpec", "bucket_of", "add_cli_arguments", "from_cli_args"]

BUCKET_SHORT_SIDE = 352
BUCKET_STEP = 32


def bucket_of(width: int, height: int) -> tuple[int, int]:
    """Bucket (H, W) of an image of ``width`` x ``height`` px (spec 1.4): short side 352, long side a multiple of 32.

    The long side is ``floor(long * 352 / short / 32 + 0.5) * 32``, at least 352.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    short, long_ = min(width, height), max(width, height)
    scaled = max(BUCKET_SHORT_SIDE, int(long_ * BUCKET_SHORT_SIDE / short / BUCKET_STEP + 0.5) * BUCKET_STEP)
    return (BUCKET_SHORT_SIDE, scaled) if width >= height else (scaled, BUCKET_SHORT_SIDE)


# --------------------------------------------------------------------------- raw access (tar members or files)
def _read_part(root: Path, part: tuple) -> bytes:
    """Bytes of ``("file", rel)`` or ``("tar", rel, offset, size)``.

    Raises:
        RecordError: ``truncated``, ``missing_file`` or ``unreadable``.
    """
    kind, rel = part[0], part[1]
    path = root / rel
    try:
        if kind == "file":
            return path.read_bytes()
        offset, size = part[2], part[3]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except FileNotFoundError:
        raise RecordError("missing_file", f"{path} does not exist") from None
    except OSError as exc:
        raise RecordError("unreadable", f"cannot read {path}: {exc}") from None
    if len(data) != size:
        raise RecordError("truncated", f"{path}: member at byte {offset} has {len(data)} of {size} bytes")
    return data


def _parse_json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
        image = doc["image"]
        int(image["image_id"]), int(image["width"]), int(image["height"])
        if not isinstance(doc["annotations"], list):
            raise TypeError("annotations is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError("malformed_json", f"{what}: not an SA-1B image JSON ({type(exc).__name__}: {exc})") from None
    return doc


def _tar_pairs(root: Path, tar_path: Path) -> tuple[dict[str, dict[str, tuple]], list[Reject]]:
    """``{stem: {".jpg": part, ".json": part}}`` of one tar, reading headers only; truncation becomes a reject."""
    rel = tar_path.relative_to(root).as_posix()
    pairs: dict[str, dict[str, tuple]] = {}
    rejects: list[Reject] = []
    file_size = tar_path.stat().st_size
    try:
        with tarfile.open(tar_path, "r:") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                name = Path(member.name)
                if member.offset_data + member.size > file_size:
                    rejects.append(Reject(source_id=f"sa1b/{rel}/{member.name}", stage="enumerate", reason="truncated",
                                          message=f"{tar_path}: member {member.name} needs {member.size} bytes from "
                                                  f"{member.offset_data}, the file has {file_size}"))
                    break
                if name.suffix in (".jpg", ".json"):
                    pairs.setdefault(name.stem, {})[name.suffix] = ("tar", rel, member.offset_data, member.size)
    except (tarfile.TarError, OSError, EOFError) as exc:
        rejects.append(Reject(source_id=f"sa1b/{rel}", stage="enumerate", reason="truncated",
                              message=f"{tar_path}: tar unreadable after {len(pairs)} members: {exc}"))
    return pairs, rejects


def _folder_pairs(root: Path) -> dict[str, dict[str, tuple]]:
    pairs: dict[str, dict[str, tuple]] = {}
    for suffix in (".jpg", ".json"):
        for p in sorted(root.rglob(f"sa_*{suffix}")):
            pairs.setdefault(p.stem, {})[suffix] = ("file", p.relative_to(root).as_posix())
    return pairs


@dataclass(frozen=True, kw_only=True, slots=True)
class SA1BSpec:
    """SA-1B images and their mask annotations, from tars or extracted files (module docstring)."""

    root: Path
    """Folder with ``sa_*.tar`` files and/or extracted ``sa_*.jpg`` + ``sa_*.json``."""
    name: str = "sa1b"
    """Dataset name stored in the shards (bucket specs append ``-{H}x{W}``)."""
    tars: tuple[str, ...] = ()
    """Restrict to these tar file names (e.g. ``("sa_000000.tar",)``); empty = every tar under ``root``."""
    bucketing: bool = False
    """Convert per resolution bucket: callers convert each of :meth:`buckets` instead of this spec (``flip convert``
    does so when this is set, writing ``OUT/{H}x{W}/``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ enumeration
    def _sources(self) -> tuple[list[tuple[str, dict[str, dict[str, tuple]]]], list[Reject]]:
        if not self.root.is_dir():
            raise SpecError(f"sa1b: root {self.root} is not a folder")
        tar_paths = sorted(self.root.glob("*.tar"))
        if self.tars:
            missing = sorted(set(self.tars) - {p.name for p in tar_paths})
            if missing:
                raise SpecError(f"sa1b: tar files {missing} not found in {self.root}")
            tar_paths = [p for p in tar_paths if p.name in self.tars]
        groups, rejects = [], []
        for tar_path in tar_paths:
            pairs, bad = _tar_pairs(self.root, tar_path)
            groups.append((tar_path.name, pairs))
            rejects.extend(bad)
        if not self.tars:
            groups.append(("files", _folder_pairs(self.root)))
        return groups, rejects

    def _scan_all(self) -> tuple[Sample | Reject, ...]:
        groups, rejects = self._sources()
        items: list[Sample | Reject] = list(rejects)
        for origin, pairs in groups:
            for stem, parts in sorted(pairs.items()):
                items.append(self._scan_one(origin, stem, parts))
        return tuple(items)

    def _scan_one(self, origin: str, stem: str, parts: dict[str, tuple]) -> Sample | Reject:
        source_id = f"sa1b/{origin}/{stem}"
        if set(parts) != {".jpg", ".json"}:
            have = next(iter(parts))
            return Reject(source_id=source_id, stage="enumerate", reason="missing_file",
                          message=f"{source_id}: has {stem}{have} but not "
                                  f"{stem}{'.json' if have == '.jpg' else '.jpg'}")
        try:
            doc = _parse_json(_read_part(self.root, parts[".json"]), f"{source_id}.json")
        except RecordError as exc:
            return Reject(source_id=source_id, stage="enumerate", reason=exc.reason, message=f"{source_id}: {exc}")
        img = doc["image"]
        instances = tuple(
            InstanceSource(source_id=f"sa1b/ann/{ann.get('id', f'{stem}#{i}')}", payload=i,
                           metadata={k: ann[k] for k in ("area", "predicted_iou", "stability_score") if k in ann})
            for i, ann in enumerate(doc["annotations"])
        )
        return Sample(key=int(img["image_id"]), source_id=source_id, file_name=str(img.get("file_name", stem + ".jpg")),
                      width=int(img["width"]), height=int(img["height"]), instances=instances,
                      payload=(parts[".jpg"], parts[".json"]), metadata={"origin": origin})

    def samples(self) -> Iterator[Sample]:
        """Every image at its stored size.

        Raises:
            SpecError: when ``bucketing`` is set: such a spec is converted through :meth:`buckets`, never whole,
                so that a caller that does not know about buckets fails loudly instead of ignoring the option.
        """
        if self.bucketing:
            raise SpecError("sa1b: bucketing is set; convert each spec of SA1BSpec.buckets() into OUT/{H}x{W}/ "
                            "(this converter entry point does not dispatch buckets)")
        yield from self.whole_samples()

    def _scan_split(self) -> tuple[list[Sample], list[Reject]]:
        return split_scan(self._scan_all())

    def whole_samples(self, *, fresh: bool = True) -> list[Sample]:
        """Every image at its stored size, whatever ``bucketing`` says (the bucket specs filter these).

        ``fresh=False`` reuses this process's latest scan (bucket specs), else the source is read again.
        """
        if fresh:
            return remember_scan(self, self._scan_split())[0]
        return recall_scan(self, self._scan_split)[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan_split)[1])

    def file_metadata(self) -> dict[str, str]:
        return {"source": "SA-1B", "bucketing": "none"}

    def buckets(self) -> dict[str, SA1BBucketSpec]:
        """One spec per resolution bucket present, keyed ``"{H}x{W}"`` (spec 1.4), in sorted order."""
        sizes = sorted({bucket_of(s.width, s.height) for s in self.whole_samples()})
        return {f"{h}x{w}": SA1BBucketSpec(parent=self, height=h, width=w) for h, w in sizes}

    # ------------------------------------------------------------------ decoding
    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        try:
            return _read_part(self.root, sample.payload[0])
        except RecordError as exc:
            raise RecordError(exc.reason, f"{sample.source_id}: {exc}") from None

    def _annotations(self, sample: Sample) -> list[dict]:
        try:
            return _parse_json(_read_part(self.root, sample.payload[1]), sample.source_id)["annotations"]
        except RecordError as exc:
            raise RecordError(exc.reason, f"{sample.source_id}: {exc}") from None

    def decode_rles(self, sample: Sample) -> list[tuple[InstanceSource, np.ndarray | Reject]]:
        """Each instance's (h, w) bool mask at the size declared by the JSON, or its Reject."""
        anns = self._annotations(sample)
        source_hw = source_size(sample)
        out = []
        for src in sample.instances:
            seg = anns[src.payload].get("segmentation") if src.payload < len(anns) else None
            try:
                size = tuple(int(x) for x in seg["size"])
                if size != source_hw:
                    out.append((src, Reject(source_id=src.source_id, stage="mask", reason="size_mismatch",
                                            message=f"{src.source_id}: RLE size {size} (h, w) but the image is "
                                                    f"{source_hw}")))
                    continue
                rle = {"size": list(size), "counts": seg["counts"]}
                if isinstance(rle["counts"], list):
                    rle = mask_utils.frPyObjects(rle, *size)
                out.append((src, mask_utils.decode(rle).astype(bool)))
            except (KeyError, TypeError, ValueError) as exc:
                out.append((src, Reject(source_id=src.source_id, stage="mask", reason="malformed_rle",
                                        message=f"{src.source_id}: cannot decode segmentation: {exc}")))
        return out

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        if (height, width) != (sample.height, sample.width):
            return [Reject(source_id=s.source_id, stage="mask", reason="size_mismatch",
                           message=f"{s.source_id}: JSON says {sample.width}x{sample.height}, "
                                   f"image is {width}x{height}")
                    for s in sample.instances]
        return [_instance(src, m) for src, m in self.decode_rles(sample)]


def source_size(sample: Sample) -> tuple[int, int]:
    """(height, width) of the image as stored in SA-1B (bucket samples declare the resized size instead)."""
    meta = sample.metadata
    return int(meta.get("source_height", sample.height)), int(meta.get("source_width", sample.width))


def _instance(src: InstanceSource, mask: np.ndarray | Reject, what: str = "RLE") -> InstanceMask | Reject:
    if isinstance(mask, Reject):
        return mask
    if not mask.any():
        return empty_mask(src.source_id, what)
    return InstanceMask(source_id=src.source_id, category_id=-1, mask=mask, metadata=dict(src.metadata))


@dataclass(frozen=True, kw_only=True, slots=True)
class SA1BBucketSpec:
    """The images of one resolution bucket of an :class:`SA1BSpec`, resized to (height, width) (spec 1.4)."""

    parent: SA1BSpec
    """The full source."""
    height: int
    """Bucket height in px."""
    width: int
    """Bucket width in px."""

    @property
    def name(self) -> str:
        return f"{self.parent.name}-{self.height}x{self.width}"

    def samples(self) -> Iterator[Sample]:
        """The parent's samples in this bucket, declaring the bucket size; the stored size goes to metadata."""
        for s in self.parent.whole_samples(fresh=False):
            if bucket_of(s.width, s.height) == (self.height, self.width):
                meta = {**s.metadata, "source_width": s.width, "source_height": s.height}
                yield dataclasses.replace(s, width=self.width, height=self.height, metadata=meta)

    def enumeration_rejects(self) -> list[Reject]:
        """Enumeration rejects belong to no bucket; they are reported with the first (smallest) bucket only."""
        sizes = sorted({bucket_of(s.width, s.height) for s in self.parent.whole_samples(fresh=False)})
        return self.parent.enumeration_rejects() if sizes and sizes[0] == (self.height, self.width) else []

    def file_metadata(self) -> dict[str, str]:
        return {"source": "SA-1B", "bucketing": "short side 352, long side multiple of 32 (flip-spec 1.4)",
                "bucket": f"{self.height}x{self.width}"}

    def load_image(self, sample: Sample) -> np.ndarray:
        data = self.parent.load_image(sample)
        rgb = decode_image_bytes(data, source_id=sample.source_id, what=sample.file_name)
        if rgb.shape[:2] != source_size(sample):
            h, w = source_size(sample)
            raise RecordError("size_mismatch", f"{sample.source_id}: JPEG is {rgb.shape[1]}x{rgb.shape[0]}, JSON "
                                               f"says {w}x{h}")
        img = Image.fromarray(rgb).resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        if (height, width) != (self.height, self.width):
            raise RecordError("size_mismatch", f"{sample.source_id}: decoded {width}x{height}, bucket is "
                                               f"{self.width}x{self.height}")
        out = []
        for src, m in self.parent.decode_rles(sample):
            resized = m if isinstance(m, Reject) else resize_mask_area(m, height, width)
            out.append(_instance(src, resized, what=f"RLE resized to {width}x{height}"))
        return out


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder with sa_*.tar files or extracted sa_* files")
    parser.add_argument("--name", default="sa1b", help="dataset name stored in the shards (default sa1b)")
    parser.add_argument("--tars", nargs="*", default=(), help="only these tar file names (default: all under --root)")
    parser.add_argument("--bucketing", action="store_true",
                        help="resize to buckets (short side 352, long side multiple of 32), one dataset per bucket "
                             "in OUT/{H}x{W}/ (flip-spec 1.4); the converter must convert spec.buckets() one by one")


def from_cli_args(args: argparse.Namespace) -> SA1BSpec:
    """The SA-1B spec; with ``--bucketing`` (``spec.bucketing``) the CLI converts ``spec.buckets()`` one by one."""
    return SA1BSpec(root=args.root, name=args.name, tars=tuple(args.tars), bucketing=args.bucketing)
