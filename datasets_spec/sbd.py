"""SBD (Semantic Boundaries Dataset) instances, ``flip convert sbd --root DIR --out DIR [--split val]``.

Expected layout (``benchmark.tgz`` -> ``benchmark_RELEASE/dataset``; RITM ``isegm/data/datasets/sbd.py``)::

    DIR/
      img/{id}.jpg            PASCAL VOC images, id like 2008_000202
      inst/{id}.mat           MATLAB struct GTinst with fields Segmentation (H, W uint8 instance map, 0 background),
                              Boundaries (cell of sparse boundary maps) and Categories (n x 1 VOC class 1..20)
      train.txt, val.txt      one id per line

Each value k > 0 of ``GTinst.Segmentation`` is one instance with category ``Categories[k-1]`` (VOC class id).
Value 255, if present, is treated as void: it becomes the ignore region of every instance of the image. The
``.mat`` is read with ``scipy.io.loadmat`` (struct fields by name, not by position as RITM does).

Rejects: a listed id without image or ``.mat`` (``missing_file``), a ``.mat`` that scipy cannot read or without a
``GTinst`` struct with a 2-D ``Segmentation`` (``malformed_mat``), an instance value beyond ``Categories``
(``unknown_label``), a map not of the image size (``size_mismatch``). RITM's training-only "buggy mask" filter is
not applied.

Keys: the id's digits as an integer (``2008_000202`` -> 2008000202); ids without that form raise SpecError.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from datasets_spec._common import (
    id_map_instances,
    present_values,
    read_image_file,
    recall_scan,
    remember_scan,
    split_scan,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

__all__ = ["SBDSpec", "read_gtinst", "add_cli_arguments", "from_cli_args"]

SPLITS = ("train", "val")
VOID_VALUE = 255


def read_gtinst(path: Path, *, source_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(Segmentation (H, W) int64, Categories (n,) int64)`` of an SBD ``inst/*.mat`` file.

    Raises:
        RecordError: ``missing_file`` or ``malformed_mat`` naming the file and what is wrong.
    """
    if not Path(path).exists():
        raise RecordError("missing_file", f"{source_id}: {path} does not exist")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, OSError... for corrupt files
        raise RecordError("malformed_mat",
                          f"{source_id}: scipy cannot read {path}: {type(exc).__name__}: {exc}") from None
    try:
        gt = mat["GTinst"][0, 0]
        seg = np.asarray(gt["Segmentation"])
        cats = np.asarray(gt["Categories"]).astype(np.int64).reshape(-1)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise RecordError("malformed_mat", f"{source_id}: {path} has no GTinst struct with Segmentation and "
                                           f"Categories ({type(exc).__name__}: {exc})") from None
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise RecordError("malformed_mat", f"{source_id}: {path} GTinst.Segmentation is {seg.dtype} {seg.shape}, "
                                           "expected a 2-D integer map")
    return seg.astype(np.int64), cats


def sbd_key(sample_id: str) -> int:
    """``2008_000202`` -> 2008000202. Raises SpecError for ids that are not ``YYYY_NNNNNN``."""
    year, _, num = sample_id.partition("_")
    if not (year.isdigit() and num.isdigit() and len(year) == 4 and len(num) == 6):
        raise SpecError(f"sbd: id {sample_id!r} is not of the form YYYY_NNNNNN")
    return int(year) * 10**6 + int(num)


@dataclass(frozen=True, kw_only=True, slots=True)
class SBDSpec:
    """SBD instance maps of one split (module docstring)."""

    root: Path
    """``benchmark_RELEASE/dataset`` folder."""
    split: str = "val"
    """``train`` or ``val`` (the id list file)."""
    name: str = ""
    """Dataset name stored in the shards; default ``sbd-{split}``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not self.name:
            object.__setattr__(self, "name", f"sbd-{self.split}")

    def _ids(self) -> list[str]:
        path = self.root / f"{self.split}.txt"
        try:
            ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise SpecError(f"sbd: cannot read the id list {path}: {exc}") from None
        for i in ids:
            sbd_key(i)
        return ids

    def _scan_one(self, sample_id: str) -> Sample | Reject:
        source_id = f"sbd/{sample_id}"
        image = self.root / "img" / f"{sample_id}.jpg"
        if not image.exists():
            return Reject(source_id=source_id, stage="enumerate", reason="missing_file",
                          message=f"{source_id}: image {image} does not exist")
        try:
            seg, cats = read_gtinst(self.root / "inst" / f"{sample_id}.mat", source_id=source_id)
        except RecordError as exc:
            return Reject(source_id=source_id, stage="enumerate", reason=exc.reason, message=str(exc))
        instances, rejects = [], []
        for v in (x for x in present_values(seg) if 0 < x != VOID_VALUE):
            sid = f"{source_id}/{v}"
            if v > len(cats):
                rejects.append(Reject(source_id=sid, stage="enumerate", reason="unknown_label",
                                      message=f"{sid}: instance {v} but GTinst.Categories has {len(cats)} entries"))
                continue
            instances.append(InstanceSource(source_id=sid, category_id=int(cats[v - 1]), payload=v,
                                            metadata={"instance_id": v}))
        return Sample(key=sbd_key(sample_id), source_id=source_id, file_name=f"img/{sample_id}.jpg",
                      image_path=image, width=int(seg.shape[1]), height=int(seg.shape[0]),
                      instances=tuple(instances), payload=f"inst/{sample_id}.mat", rejects=tuple(rejects))

    def _scan(self) -> tuple[list[Sample], list[Reject]]:
        return split_scan(self._scan_one(i) for i in self._ids())

    def samples(self) -> Iterator[Sample]:
        yield from remember_scan(self, self._scan())[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan)[1])

    def file_metadata(self) -> dict[str, str]:
        return {"type": self.split, "split": self.split, "category_ids": "PASCAL VOC 1..20"}

    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        return read_image_file(sample.image_path, source_id=sample.source_id)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        seg, _ = read_gtinst(self.root / sample.payload, source_id=sample.source_id)
        void = seg == VOID_VALUE
        return id_map_instances(seg, sample.instances, height=height, width=width, what=sample.payload,
                                ignore=void if void.any() else None)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="benchmark_RELEASE/dataset folder (img/, inst/)")
    parser.add_argument("--split", choices=SPLITS, default="val", help="id list to convert (default val)")
    parser.add_argument("--name", default="", help="dataset name stored in the shards (default sbd-{split})")


def from_cli_args(args: argparse.Namespace) -> SBDSpec:
    return SBDSpec(root=args.root, split=args.split, name=args.name)
