"""LVIS v0.5 and v1, ``flip convert lvis --images DIR --annotations FILE --out DIR``.

LVIS annotations are COCO JSON (``datasets_spec.coco`` handles polygons, RLE and every reject reason) plus extra
fields, and they refer to COCO images. Expected layout::

    IMAGES/                                 --images: a COCO image root, either layout works
      val2017/000000266409.jpg              the coco_url layout (<split>/<12-digit id>.jpg)
      train2017/...
      COCO_val2014_000000266409.jpg         or the v0.5 file_name layout, directly under IMAGES
    lvis_v1_val.json / lvis_v0.5_val.json   --annotations

Image files are looked up, in this order: ``file_name`` (v0.5 only; v1 images have none), the last two components
of ``coco_url`` (``val2017/000000266409.jpg``), and the ``coco_url`` base name directly under ``--images``. The first
candidate that exists is used; when none does, the image is rejected (``missing_file``) with every candidate in the
message. ``file_names`` in the shards holds the path actually used, relative to ``--images``.

Kept as metadata (JSON in the shards' ``image_metadata`` / ``instance_metadata`` and ``coco_categories``):
image ``neg_category_ids`` and ``not_exhaustive_category_ids`` and any other non-COCO field, annotation fields other
than the COCO ones, and the categories with their ``frequency``, ``synset``, ``synonyms``... The ``metadata`` group
gets ``lvis_version`` (``"v0.5"`` when images carry ``file_name``, else ``"v1"``). LVIS has no ``iscrowd``.
Source ids are ``lvis/img/<id>`` and ``lvis/ann/<id>``; ``dataset_name`` defaults to ``lvis-<split>`` from
``lvis_<split>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from datasets_spec.base import RecordError, Sample, SpecError, resolve_under
from datasets_spec.coco import CocoSpec

__all__ = ["LvisSpec", "add_cli_arguments", "from_cli_args"]

_COCO_IMAGE_KEYS = {"id", "file_name", "width", "height", "license", "coco_url", "flickr_url", "date_captured"}
_COCO_ANN_KEYS = {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}


class LvisSpec(CocoSpec):
    """LVIS v0.5/v1 annotations over a COCO image root (see the module docstring)."""

    source_prefix = "lvis"

    def _needs_file_name(self) -> bool:
        return False

    def _validate(self, data: dict) -> None:
        super()._validate(data)
        for i, img in enumerate(data["images"]):
            if not isinstance(img.get("file_name"), str) and not isinstance(img.get("coco_url"), str):
                raise SpecError(f"{self.annotations}: $.images[{i}]: needs a 'file_name' or a 'coco_url' string")

    @property
    def version(self) -> str:
        images = self._load()["images"]
        return "v0.5" if images and all("file_name" in img for img in images) else "v1"

    def file_metadata(self) -> dict[str, str]:
        return {**super().file_metadata(), "lvis_version": self.version}

    def _candidates(self, img: dict, source_id: str) -> list[Path]:
        out = []
        if isinstance(img.get("file_name"), str):
            out.append(resolve_under(self.images, img["file_name"], source_id=source_id))
        if isinstance(img.get("coco_url"), str):
            parts = PurePosixPath(urlparse(img["coco_url"]).path).parts
            if len(parts) >= 2:
                out.append(resolve_under(self.images, "/".join(parts[-2:]), source_id=source_id))
            if parts:
                out.append(resolve_under(self.images, parts[-1], source_id=source_id))
        if not out:
            raise RecordError("missing_file", f"{source_id}: neither file_name nor a usable coco_url")
        return list(dict.fromkeys(out))

    def _image_path(self, img: dict, source_id: str) -> tuple[Path, dict]:
        candidates = self._candidates(img, source_id)
        chosen = next((p for p in candidates if p.is_file()), candidates[0])
        return chosen, {"candidates": [str(p) for p in candidates]}

    def _sample(self, img: dict, anns: list[dict], rejects) -> Sample | None:
        sample = super()._sample(img, anns, rejects)
        if sample is None:
            return None
        # file_names holds the path actually used, relative to --images (v1 has no file_name at all).
        rel = sample.image_path.relative_to(self.images.resolve()).as_posix()
        meta = dict(sample.metadata)
        if img.get("file_name") and img["file_name"] != rel:
            meta["lvis_file_name"] = img["file_name"]
        return dataclasses.replace(sample, file_name=rel, metadata=meta)

    def _image_metadata(self, img: dict) -> dict:
        meta = super()._image_metadata(img)
        meta.update({k: v for k, v in img.items() if k not in _COCO_IMAGE_KEYS})
        return meta

    def _instance_metadata(self, ann: dict) -> dict:
        return {k: v for k, v in ann.items() if k not in _COCO_ANN_KEYS}

    def _missing_hint(self, sample: Sample) -> str:
        tried = (sample.payload or {}).get("candidates", [])
        return f" (tried: {', '.join(tried)})" if tried else ""


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``--images``, ``--annotations``, ``--name``, ``--keep-crowd`` (no effect: LVIS has no crowd annotations)."""
    parser.add_argument("--images", type=Path, required=True, help="COCO image root (val2017/, train2017/ inside)")
    parser.add_argument("--annotations", type=Path, required=True, help="LVIS v0.5 or v1 JSON file")
    parser.add_argument("--name", default=None, help="dataset name (default lvis-<split> from the JSON file name)")
    parser.add_argument("--keep-crowd", action="store_true", help="keep iscrowd annotations (LVIS has none)")


def from_cli_args(args: argparse.Namespace) -> LvisSpec:
    return LvisSpec(images=args.images, annotations=args.annotations, name=args.name, keep_crowd=args.keep_crowd)
