"""Open Images V7 instance segmentation, ``flip convert openimages --root DIR --out DIR [--split validation]
[--class-descriptions FILE]``.

Expected layout (Open Images V7 download page, "Segmentations"; the RITM ``openimages.py`` loader uses the same)::

    DIR/
      {split}-annotations-object-segmentation.csv   MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,
                                                     BoxYMax,PredictedIoU,Clicks (one row per instance)
      {split}/images/{ImageID}.jpg                   the images
      {split}/masks/{MaskPath}                       the mask PNGs, extracted from {split}-masks-{0-9a-f}.zip ...
      {split}/masks/{split}-masks-{c}.zip            ... or left in the zips (c = first character of MaskPath)
      oidv7-class-descriptions.csv                   optional: LabelName,DisplayName (--class-descriptions)

``--images-dir`` / ``--masks-dir`` change the two folders (``{split}`` is substituted), e.g. ``--images-dir {split}``
for the official downloader's ``{split}/{ImageID}.jpg``.

``split`` is ``train``, ``validation`` or ``test``. Mask PNGs are binary (any non-zero pixel is object) and smaller
than their images; they are resized nearest-neighbour to the image size (benchmarks.md 3.2). A mask whose aspect
ratio differs from its image's by more than one pixel of rounding is rejected (``size_mismatch``). Category ids are the
0-based row of the LabelName in the class-descriptions file (stable across splits); without that file every
category id is -1. LabelName, BoxID, box, PredictedIoU and Clicks are kept as instance metadata.

Rejects: rows whose LabelName is not in the class descriptions (``unknown_label``), rows with a missing field
(``malformed_row``), mask files that do not exist (``missing_file``). A missing image rejects the whole image.

Keys: ``int(ImageID, 16)`` with the top bit cleared (ImageIDs are 16 hex digits = 64 bits; int64 holds 63); a
collision between two ImageIDs raises SpecError.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets_spec._common import (
    empty_mask,
    read_image_file,
    recall_scan,
    remember_scan,
    resize_mask_nearest,
    size_mismatch,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

__all__ = ["OpenImagesSpec", "CSV_COLUMNS", "add_cli_arguments", "from_cli_args"]

CSV_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
               "PredictedIoU", "Clicks")
SPLITS = ("train", "validation", "test")
_KEY_MASK = (1 << 63) - 1


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenImagesSpec:
    """Open Images V7 segmentation rows grouped per image (module docstring)."""

    root: Path
    """Dataset root (holds the CSV and the ``{split}/`` folder)."""
    split: str = "validation"
    """``train``, ``validation`` or ``test``."""
    name: str = ""
    """Dataset name stored in the shards; default ``openimages-{split}``."""
    annotations_csv: Path | None = None
    """Segmentation CSV; default ``root/{split}-annotations-object-segmentation.csv``."""
    class_descriptions: Path | None = None
    """``oidv7-class-descriptions.csv`` (LabelName,DisplayName), or None for category ids of -1."""
    images_dir: str = "{split}/images"
    """Image folder under ``root`` (``{split}`` is substituted); e.g. ``"{split}"`` for the official downloader."""
    masks_dir: str = "{split}/masks"
    """Mask folder (extracted PNGs and/or the ``{split}-masks-{c}.zip`` files) under ``root``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not self.name:
            object.__setattr__(self, "name", f"openimages-{self.split}")

    @property
    def csv_path(self) -> Path:
        return Path(self.annotations_csv or self.root / f"{self.split}-annotations-object-segmentation.csv")

    # ------------------------------------------------------------------ enumeration
    def _classes(self) -> dict[str, tuple[int, str]] | None:
        if self.class_descriptions is None:
            return None
        try:
            with open(self.class_descriptions, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.reader(f) if r]
        except OSError as exc:
            raise SpecError(f"openimages: cannot read class descriptions {self.class_descriptions}: {exc}") from None
        if rows and rows[0][:2] == ["LabelName", "DisplayName"]:
            rows = rows[1:]
        return {r[0]: (i, r[1] if len(r) > 1 else "") for i, r in enumerate(rows)}

    def _rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            f = open(self.csv_path, newline="", encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"openimages: cannot read {self.csv_path}: {exc}") from None
        with f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS[:3] if c not in (reader.fieldnames or ())]
            if missing:
                raise SpecError(f"openimages: {self.csv_path} lacks columns {missing} (header {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                yield line, row

    def _scan(self) -> tuple[list[Sample], list[Reject]]:
        classes = self._classes()
        per_image: OrderedDict[str, list[InstanceSource]] = OrderedDict()
        rejects: list[Reject] = []
        for line, row in self._rows():
            item = self._instance(line, row, classes)
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                per_image.setdefault(row["ImageID"], []).append(item)
        samples, owner = [], {}
        for image_id, instances in per_image.items():
            key = int(image_id, 16) & _KEY_MASK
            if key in owner:
                raise SpecError(f"openimages: ImageIDs {owner[key]} and {image_id} map to the same key {key}")
            owner[key] = image_id
            rel = f"{self.images_dir.format(split=self.split)}/{image_id}.jpg"
            samples.append(Sample(key=key, source_id=f"openimages/img/{image_id}",
                                  file_name=rel, image_path=self.root / rel,
                                  instances=tuple(instances), metadata={"image_id": image_id}))
        return samples, rejects

    def _instance(self, line: int, row: dict[str, str], classes) -> InstanceSource | Reject:
        mask_path, image_id, label = row.get("MaskPath") or "", row.get("ImageID") or "", row.get("LabelName") or ""
        sid = f"openimages/mask/{mask_path or f'line{line}'}"
        if not (mask_path and label) or not _is_hex(image_id):
            return Reject(source_id=sid, stage="enumerate", reason="malformed_row",
                          message=f"{self.csv_path}:{line}: MaskPath/ImageID(16 hex)/LabelName required, got {row}")
        if "/" in mask_path or "\\" in mask_path:
            return Reject(source_id=sid, stage="enumerate", reason="path_escape",
                          message=f"{self.csv_path}:{line}: MaskPath {mask_path!r} is not a bare file name")
        category, display = -1, ""
        if classes is not None:
            if label not in classes:
                return Reject(source_id=sid, stage="enumerate", reason="unknown_label",
                              message=f"{self.csv_path}:{line}: LabelName {label} not in {self.class_descriptions}")
            category, display = classes[label]
        meta = {k: row.get(k, "") for k in CSV_COLUMNS[2:]}
        meta["DisplayName"] = display
        return InstanceSource(source_id=sid, category_id=category, payload=mask_path, metadata=meta)

    def samples(self) -> Iterator[Sample]:
        yield from remember_scan(self, self._scan())[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan)[1])

    def file_metadata(self) -> dict[str, str]:
        return {"type": self.split, "split": self.split, "annotations_csv": self.csv_path.name,
                "class_descriptions": Path(self.class_descriptions).name if self.class_descriptions else ""}

    # ------------------------------------------------------------------ decoding
    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        return read_image_file(sample.image_path, source_id=sample.source_id)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        out: list[InstanceMask | Reject] = []
        for src in sample.instances:
            try:
                small = self._read_mask(src.payload, source_id=src.source_id)
            except RecordError as exc:
                out.append(Reject(source_id=src.source_id, stage="mask", reason=exc.reason, message=str(exc)))
                continue
            h, w = small.shape
            if abs(round(w * height / width) - h) > 1 and abs(round(h * width / height) - w) > 1:
                out.append(size_mismatch(src.source_id, f"mask {src.payload} (aspect ratio differs)", small.shape,
                                         height, width))
                continue
            mask = resize_mask_nearest(small, height, width)
            if not mask.any():
                out.append(empty_mask(src.source_id, src.payload))
                continue
            meta = {**src.metadata, "mask_size": [int(small.shape[1]), int(small.shape[0])]}
            out.append(InstanceMask(source_id=src.source_id, category_id=src.category_id, mask=mask, metadata=meta))
        return out

    def _read_mask(self, mask_name: str, *, source_id: str) -> np.ndarray:
        """(h, w) bool mask at its stored resolution, from the extracted folder or the per-prefix zip."""
        masks_dir = self.root / self.masks_dir.format(split=self.split)
        path = masks_dir / mask_name
        if path.exists():
            data, what = path.read_bytes(), str(path)
        else:
            archive = masks_dir / f"{self.split}-masks-{mask_name[0].lower()}.zip"
            data, what = _read_zip_member(archive, mask_name, source_id=source_id, extracted=path)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                arr = np.asarray(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise RecordError("unreadable", f"{source_id}: cannot decode mask {what}: {exc}") from None
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        return arr > 0


@functools.lru_cache(maxsize=16)
def _open_zip(archive: Path) -> zipfile.ZipFile:
    """A per-process open handle of a mask zip (its central directory is read once, not once per mask)."""
    return zipfile.ZipFile(archive)


def _read_zip_member(archive: Path, member: str, *, source_id: str, extracted: Path) -> tuple[bytes, str]:
    if not archive.exists():
        raise RecordError("missing_file", f"{source_id}: neither {extracted} nor {archive} exists")
    try:
        return _open_zip(archive).read(member), f"{archive}:{member}"
    except KeyError:
        raise RecordError("missing_file",
                          f"{source_id}: {member} is neither in {extracted.parent} nor in {archive}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RecordError("unreadable", f"{source_id}: cannot read {member} from {archive}: {exc}") from None


def _is_hex(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True,
                        help="Open Images root (CSV + {split}/images, {split}/masks)")
    parser.add_argument("--split", choices=SPLITS, default="validation", help="which split (default validation)")
    parser.add_argument("--name", default="", help="dataset name stored in the shards (default openimages-{split})")
    parser.add_argument("--annotations-csv", type=Path, default=None,
                        help="segmentation CSV (default ROOT/{split}-annotations-object-segmentation.csv)")
    parser.add_argument("--images-dir", default="{split}/images",
                        help="image folder under --root; {split} is substituted (default {split}/images)")
    parser.add_argument("--masks-dir", default="{split}/masks",
                        help="mask folder (PNGs and/or {split}-masks-<c>.zip) under --root (default {split}/masks)")
    parser.add_argument("--class-descriptions", type=Path, default=None,
                        help="oidv7-class-descriptions.csv; gives category ids (its row) and rejects unknown labels")


def from_cli_args(args: argparse.Namespace) -> OpenImagesSpec:
    return OpenImagesSpec(root=args.root, split=args.split, name=args.name, annotations_csv=args.annotations_csv,
                          class_descriptions=args.class_descriptions, images_dir=args.images_dir,
                          masks_dir=args.masks_dir)
