"""KITTI-360 2D instances, ``flip convert kitti360 --root DIR --out DIR [--camera image_00] [--sequences ...]``.

Expected layout (official KITTI-360 download, documentation.php "Folder Structure" / "2D Data Format")::

    DIR/
      data_2d_raw/2013_05_28_drive_{seq:04}_sync/image_00/data_rect/{frame:010}.png       rectified RGB, 1408x376
      data_2d_semantics/train/2013_05_28_drive_{seq:04}_sync/image_00/instance/{frame:010}.png
      data_2d_semantics/train/2013_05_28_drive_{val|train}_frames.txt                       optional frame lists

Instance PNGs are single-channel 16-bit. A value v >= 1000 is ``semanticId * 1000 + instanceId``; a value < 1000 is
a bare ``semanticId`` without instance (kitti360Scripts ``evaluation/semantic_2d/instance.py``: ``getLabelID``).
``semanticId`` is the ``id`` column of the official label table (``KITTI360_LABELS`` below).

Which segments become instances:

* every distinct value v >= 1000 whose label has ``hasInstances`` and not ``ignoreInEval`` (car, person, building,
  pole, traffic sign, ...), category id = the label ``id``;
* labels with instances but ``ignoreInEval`` (caravan, trailer, stop) are reported as rejects
  (``ignored_class``) unless ``--keep-ignored-classes``;
* ``--include-stuff`` adds one segment per present stuff label that is not ``ignoreInEval`` (road, sidewalk,
  vegetation, sky, ...), regardless of its instance part;
* an id whose ``semanticId`` is not in the table is rejected (``unknown_label``), and a bare ``semanticId`` < 1000
  of a label with instances (pixels of a thing class without instance id, Cityscapes' "group") is rejected
  (``no_instance_id``).

``--frames-list FILE`` (e.g. ``2013_05_28_drive_val_frames.txt``: lines of "image path  label path" relative to DIR)
restricts the conversion to the listed frames. Keys: ``seq * 10**10 + frame`` (both from the file names).
Enumeration decodes every instance PNG once (threads) to list its ids.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datasets_spec._common import (
    id_map_instances,
    open_mask_file,
    present_values,
    read_image_file,
    recall_scan,
    remember_scan,
    split_scan,
    threaded_map,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

__all__ = ["Kitti360Label", "KITTI360_LABELS", "Kitti360Spec", "add_cli_arguments", "from_cli_args"]


class Kitti360Label(NamedTuple):
    """One row of the official label table (only the columns the converter uses)."""

    name: str
    id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool


# Source: autonomousvision/kitti360Scripts, kitti360scripts/helpers/labels.py (``labels`` list; columns name, id,
# category, hasInstances, ignoreInEval), itself derived from cityscapesScripts' labels.py. 'license plate' (id -1)
# never appears in ground-truth images and is left out.
KITTI360_LABELS: tuple[Kitti360Label, ...] = tuple(
    Kitti360Label(n, i, c, h, g)
    for n, i, c, h, g in [
        ("unlabeled", 0, "void", False, True),
        ("ego vehicle", 1, "void", False, True),
        ("rectification border", 2, "void", False, True),
        ("out of roi", 3, "void", False, True),
        ("static", 4, "void", False, True),
        ("dynamic", 5, "void", False, True),
        ("ground", 6, "void", False, True),
        ("road", 7, "flat", False, False),
        ("sidewalk", 8, "flat", False, False),
        ("parking", 9, "flat", False, True),
        ("rail track", 10, "flat", False, True),
        ("building", 11, "construction", True, False),
        ("wall", 12, "construction", False, False),
        ("fence", 13, "construction", False, False),
        ("guard rail", 14, "construction", False, True),
        ("bridge", 15, "construction", False, True),
        ("tunnel", 16, "construction", False, True),
        ("pole", 17, "object", True, False),
        ("polegroup", 18, "object", False, True),
        ("traffic light", 19, "object", True, False),
        ("traffic sign", 20, "object", True, False),
        ("vegetation", 21, "nature", False, False),
        ("terrain", 22, "nature", False, False),
        ("sky", 23, "sky", False, False),
        ("person", 24, "human", True, False),
        ("rider", 25, "human", True, False),
        ("car", 26, "vehicle", True, False),
        ("truck", 27, "vehicle", True, False),
        ("bus", 28, "vehicle", True, False),
        ("caravan", 29, "vehicle", True, True),
        ("trailer", 30, "vehicle", True, True),
        ("train", 31, "vehicle", True, False),
        ("motorcycle", 32, "vehicle", True, False),
        ("bicycle", 33, "vehicle", True, False),
        ("garage", 34, "construction", True, False),
        ("gate", 35, "construction", False, False),
        ("stop", 36, "construction", True, True),
        ("smallpole", 37, "object", True, False),
        ("lamp", 38, "object", True, False),
        ("trash bin", 39, "object", True, False),
        ("vending machine", 40, "object", True, False),
        ("box", 41, "object", True, False),
        ("unknown construction", 42, "void", False, True),
        ("unknown vehicle", 43, "void", False, True),
        ("unknown object", 44, "void", False, True),
    ]
)
_LABEL_BY_ID = {lab.id: lab for lab in KITTI360_LABELS}
_SEQ_RE = re.compile(r"^\d{4}_\d{2}_\d{2}_drive_(\d{4})_sync$")
_STUFF_PAYLOAD_OFFSET = 1 << 20
"""Payload of a ``--include-stuff`` segment: offset + semanticId, decoded as ``id_map // 1000 == semanticId``."""


def split_id(value: int) -> tuple[int, int]:
    """(semanticId, instanceId) of an instance-PNG value (kitti360Scripts ``Instance.getLabelID``)."""
    return (value, 0) if value < 1000 else (value // 1000, value % 1000)


@dataclass(frozen=True, kw_only=True, slots=True)
class Kitti360Spec:
    """KITTI-360 perspective frames with their 2D instance PNGs (module docstring)."""

    root: Path
    """KITTI-360 root (holds ``data_2d_raw/`` and ``data_2d_semantics/``)."""
    name: str = "kitti360"
    """Dataset name stored in the shards."""
    camera: str = "image_00"
    """Perspective camera folder (``image_00`` left, ``image_01`` right)."""
    sequences: tuple[str, ...] = ()
    """Restrict to these sequence folder names or 4-digit numbers; empty = all."""
    frames_list: Path | None = None
    """Optional official frame list (``2013_05_28_drive_val_frames.txt``); its label paths select the frames."""
    include_stuff: bool = False
    """Also emit one segment per present non-ignored stuff label."""
    keep_ignored_classes: bool = False
    """Keep instances of ``ignoreInEval`` labels (caravan, trailer, stop) instead of rejecting them."""
    enumerate_threads: int = 4
    """Threads decoding instance PNGs during enumeration."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.enumerate_threads < 1:
            raise ValueError(f"enumerate_threads must be >= 1, got {self.enumerate_threads}")

    # ------------------------------------------------------------------ enumeration
    def _label_files(self) -> list[Path]:
        sem = self.root / "data_2d_semantics" / "train"
        if not sem.is_dir():
            raise SpecError(f"kitti360: expected {sem} (see `flip convert kitti360 --help` for the layout)")
        if self.frames_list is not None:
            return self._listed_label_files()
        wanted = {s if not s.isdigit() else f"2013_05_28_drive_{int(s):04d}_sync" for s in self.sequences}
        files = []
        for seq_dir in sorted(p for p in sem.iterdir() if p.is_dir() and _SEQ_RE.match(p.name)):
            if wanted and seq_dir.name not in wanted:
                continue
            files.extend(sorted((seq_dir / self.camera / "instance").glob("*.png")))
        return files

    def _listed_label_files(self) -> list[Path]:
        try:
            lines = Path(self.frames_list).read_text().split("\n")
        except OSError as exc:
            raise SpecError(f"kitti360: cannot read --frames-list {self.frames_list}: {exc}") from None
        files = []
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise SpecError(f"kitti360: {self.frames_list}:{n}: expected 'image_path label_path', got {line!r}")
            files.append(self.root / parts[1].replace("/semantic/", "/instance/"))
        return files

    def _frame_of(self, label_file: Path) -> tuple[int, str, int, Path]:
        """(key, sequence folder, frame number, image path) of an instance PNG path."""
        seq_dir = label_file.parents[2].name
        m = _SEQ_RE.match(seq_dir)
        if not m or not label_file.stem.isdigit():
            raise RecordError("bad_name",
                              f"kitti360: {label_file} does not follow <drive>_sync/<cam>/instance/<frame>.png")
        frame = int(label_file.stem)
        image = self.root / "data_2d_raw" / seq_dir / self.camera / "data_rect" / label_file.name
        return int(m.group(1)) * 10**10 + frame, seq_dir, frame, image

    def _scan(self, label_file: Path) -> Sample | Reject:
        source_id = f"kitti360/{label_file.parents[2].name}/{self.camera}/{label_file.stem}"
        try:
            key, seq_dir, frame, image = self._frame_of(label_file)
            ids, _ = open_mask_file(label_file, source_id=source_id)
        except RecordError as exc:
            return Reject(source_id=source_id, stage="enumerate", reason=exc.reason, message=str(exc))
        if ids.ndim != 2:
            return Reject(source_id=source_id, stage="enumerate", reason="bad_shape",
                          message=f"{label_file}: expected a single-channel 16-bit PNG, got shape {ids.shape}")
        instances, rejects = self._instances(present_values(ids), source_id)
        return Sample(
            key=key,
            source_id=source_id,
            file_name=image.relative_to(self.root).as_posix(),
            image_path=image,
            width=int(ids.shape[1]),
            height=int(ids.shape[0]),
            instances=tuple(instances),
            payload=label_file.relative_to(self.root).as_posix(),
            metadata={"sequence": seq_dir, "frame": frame, "camera": self.camera},
            rejects=tuple(rejects),
        )

    def _instances(self, values: list[int], source_id: str) -> tuple[list[InstanceSource], list[Reject]]:
        instances: list[InstanceSource] = []
        rejects: list[Reject] = []
        stuff_seen: set[int] = set()
        for v in values:
            sem, inst = split_id(v)
            label = _LABEL_BY_ID.get(sem)
            sid = f"{source_id}/{v}"
            if label is None:
                rejects.append(Reject(source_id=sid, stage="enumerate", reason="unknown_label",
                                      message=f"{sid}: semanticId {sem} is not in the KITTI-360 label table"))
            elif label.has_instances and v >= 1000:
                if label.ignore_in_eval and not self.keep_ignored_classes:
                    rejects.append(Reject(source_id=sid, stage="enumerate", reason="ignored_class",
                                          message=f"{sid}: label {label.name!r} is ignoreInEval"))
                else:
                    instances.append(InstanceSource(source_id=sid, category_id=sem, payload=v,
                                                    metadata={"label": label.name, "instance_id": inst}))
            elif label.has_instances:
                rejects.append(Reject(source_id=sid, stage="enumerate", reason="no_instance_id",
                                      message=f"{sid}: {label.name!r} pixels without an instance id (a group)"))
            elif self.include_stuff and not label.has_instances and not label.ignore_in_eval and sem not in stuff_seen:
                stuff_seen.add(sem)
                instances.append(InstanceSource(source_id=f"{source_id}/stuff{sem}", category_id=sem,
                                                payload=_STUFF_PAYLOAD_OFFSET + sem,
                                                metadata={"label": label.name, "instance_id": 0}))
        return instances, rejects

    def _scan_split(self) -> tuple[list[Sample], list[Reject]]:
        return split_scan(threaded_map(self._scan, self._label_files(), workers=self.enumerate_threads))

    def samples(self) -> Iterator[Sample]:
        yield from remember_scan(self, self._scan_split())[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan_split)[1])

    def file_metadata(self) -> dict[str, str]:
        return {"label_table": "kitti360Scripts/kitti360scripts/helpers/labels.py", "camera": self.camera}

    # ------------------------------------------------------------------ decoding
    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        return read_image_file(sample.image_path, source_id=sample.source_id)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        ids, _ = open_mask_file(self.root / sample.payload, source_id=sample.source_id)
        ids = ids.astype(np.int64)
        things = [s for s in sample.instances if s.payload < _STUFF_PAYLOAD_OFFSET]
        stuff = [s for s in sample.instances if s.payload >= _STUFF_PAYLOAD_OFFSET]
        out = {id(s): m for s, m in zip(things, id_map_instances(ids, things, height=height, width=width,
                                                                    what=sample.payload))}
        if stuff:
            sem = np.where(ids < 1000, ids, ids // 1000) + _STUFF_PAYLOAD_OFFSET
            out |= {id(s): m for s, m in zip(stuff, id_map_instances(sem, stuff, height=height, width=width,
                                                                        what=sample.payload))}
        return [out[id(s)] for s in sample.instances]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True,
                        help="KITTI-360 root with data_2d_raw/ and data_2d_semantics/")
    parser.add_argument("--name", default="kitti360", help="dataset name stored in the shards (default kitti360)")
    parser.add_argument("--camera", default="image_00", choices=("image_00", "image_01"), help="perspective camera")
    parser.add_argument("--sequences", nargs="*", default=(), help="sequence numbers or folder names (default: all)")
    parser.add_argument("--frames-list", type=Path, default=None,
                        help="official frame list, e.g. data_2d_semantics/train/2013_05_28_drive_val_frames.txt")
    parser.add_argument("--include-stuff", action="store_true", help="also one segment per stuff label (road, sky...)")
    parser.add_argument("--keep-ignored-classes", action="store_true",
                        help="keep instances of ignoreInEval labels (caravan, trailer, stop)")


def from_cli_args(args: argparse.Namespace) -> Kitti360Spec:
    return Kitti360Spec(root=args.root, name=args.name, camera=args.camera, sequences=tuple(args.sequences),
                        frames_list=args.frames_list, include_stuff=args.include_stuff,
                        keep_ignored_classes=args.keep_ignored_classes)
