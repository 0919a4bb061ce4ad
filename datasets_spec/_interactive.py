"""The folder-pair layout of the interactive-segmentation benchmarks (GrabCut, Berkeley, DAVIS, COCO_MVal).

One image folder and one mask folder, matched by file stem, as the RITM loaders read them
(``isegm/data/datasets/{grabcut,berkeley,davis}.py``; ``../shared/reference/benchmarks.md`` section 3.1).
The public modules ``datasets_spec.grabcut`` / ``berkeley`` / ``davis`` / ``coco_mval`` only set defaults.

Mask rules (``mask_rule``):

* ``"band128"`` (GrabCut, Berkeley): the mask file's first channel *in OpenCV's BGR order* is used, exactly as RITM
  reads ``cv2.imread(path)[:, :, 0]``: for an RGB file that is the **blue** channel, for a grayscale file the gray
  value. ``== 128`` is the ignore band (``InstanceMask.ignore``), ``> 128`` is the object, everything else
  background. Consequences, checked in the tests on the real files: Berkeley ``8023``'s stray grey pixels 197/243
  count as object, and ``101087``'s three magenta (255, 0, 255) pixels count as object (blue = 255), as in RITM.
  One instance per mask file.
* ``"index"`` (DAVIS, COCO_MVal): a palette (``P``) PNG is read as its indices: 0 background, 255 void
  (``InstanceMask.ignore`` of every instance of that image), each other index one instance. Any other mode
  (COCO_MVal's 0/255 grayscale) is one binary instance: max over channels > 0 (RITM ``davis.py``).
  Deviation from RITM: RITM merges all DAVIS objects *and the void index* into one foreground; here objects stay
  separate (``merge_objects=True`` merges them, as RITM does) and void is always ignore, never object.

Pairing: each mask file belongs to the image with the same stem; a mask stem without an image of that stem falls
back to the stem without one trailing lower-case letter (Berkeley's ``189011a.png``/``189011b.png`` are extra
objects on ``189011.jpg``). One :class:`~datasets_spec.base.Sample` per image, holding all its masks' instances.

Keys: ``Sample.key`` is the index of the image file name in the sorted (byte-wise, case-sensitive) list of image
file names of the folder, so keys are 0..N-1 and stable for a given benchmark release. ``source_id`` is
``"<name>/img/<file name>"``; instances are ``"<name>/mask/<mask file name>[#<index>]"``.

Enumeration rejects: images without a mask (``missing_mask``), masks without an image (``missing_image``), two
images with the same stem (``duplicate_stem``), for ``index`` masks an unreadable mask (``unreadable``) and then its
image when no other mask is left (``no_instances``). While decoding: a mask of another size than its image
(``size_mismatch``) and a mask without object pixel (``empty_mask``).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets_spec._common import (
    IMAGE_SUFFIXES,
    empty_mask,
    mask_mode,
    open_mask_file,
    present_values,
    read_image_file,
    recall_scan,
    remember_scan,
    size_mismatch,
    split_scan,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

MASK_RULES = ("band128", "index")
IGNORE_VALUE_BAND = 128
"""GrabCut/Berkeley: the uncertain band value (RITM ``grabcut.py``: ``instances_mask[instances_mask == 128] = -1``)."""
VOID_INDEX = 255
"""DAVIS palette void index."""
_SUFFIX_LETTER = re.compile(r"^(?P<base>.+?)[a-z]$")


@dataclass(frozen=True, kw_only=True, slots=True)
class PairedFolderSpec:
    """Images in ``root/images_dir``, masks in ``root/masks_dir``, matched by stem (see the module docstring)."""

    name: str
    """Dataset name stored in the shards, e.g. ``"grabcut"``."""
    root: Path
    """Dataset root folder."""
    images_dir: str
    """Image folder relative to ``root`` (``data_GT``, ``images``, ``img``)."""
    masks_dir: str
    """Mask folder relative to ``root`` (``boundary_GT``, ``masks``, ``gt``)."""
    mask_rule: str
    """``"band128"`` or ``"index"`` (module docstring)."""
    merge_objects: bool = False
    """``index`` rule only: merge all object indices of a palette mask into one instance (RITM's DAVIS protocol)."""

    def __post_init__(self) -> None:
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {self.mask_rule!r}")
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ enumeration
    def _listing(self) -> tuple[list[Path], list[Path]]:
        img_dir, mask_dir = self.root / self.images_dir, self.root / self.masks_dir
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SpecError(f"{self.name}: expected folder {d} (layout: {self.images_dir}/ + {self.masks_dir}/)")
        images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        masks = sorted(p for p in mask_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return images, masks

    def _pairing(self) -> tuple[dict[str, Path], dict[str, list[Path]], list[Reject]]:
        images, masks = self._listing()
        rejects: list[Reject] = []
        by_stem: dict[str, Path] = {}
        for p in images:
            if p.stem in by_stem:
                rejects.append(
                    Reject(
                        source_id=f"{self.name}/img/{p.name}",
                        stage="enumerate",
                        reason="duplicate_stem",
                        message=f"{p} has the same stem as {by_stem[p.stem]}; only the first is used",
                    )
                )
                continue
            by_stem[p.stem] = p
        masks_of: dict[str, list[Path]] = defaultdict(list)
        for m in masks:
            stem = m.stem
            if stem not in by_stem and (match := _SUFFIX_LETTER.match(stem)) and match["base"] in by_stem:
                stem = match["base"]
            if stem not in by_stem:
                rejects.append(
                    Reject(
                        source_id=f"{self.name}/mask/{m.name}",
                        stage="enumerate",
                        reason="missing_image",
                        message=f"mask {m} has no image with stem {m.stem!r} in {self.root / self.images_dir}",
                    )
                )
                continue
            masks_of[stem].append(m)
        return by_stem, masks_of, rejects

    def _scan(self) -> tuple[list[Sample], list[Reject]]:
        """Pair the folders and list every sample's instances (``index`` masks are decoded for their indices)."""
        by_stem, masks_of, rejects = self._pairing()
        items: list[Sample | Reject] = list(rejects)
        for key, (stem, img) in enumerate(sorted(by_stem.items(), key=lambda kv: kv[1].name)):
            source_id = f"{self.name}/img/{img.name}"
            if stem not in masks_of:
                items.append(Reject(source_id=source_id, stage="enumerate", reason="missing_mask",
                                    message=f"image {img} has no mask with stem {stem!r} in "
                                            f"{self.root / self.masks_dir}"))
                continue
            instances: list[InstanceSource] = []
            bad: list[Reject] = []
            for m in masks_of[stem]:
                try:
                    instances.extend(self._mask_instances(m))
                except RecordError as exc:
                    bad.append(Reject(source_id=f"{self.name}/mask/{m.name}", stage="enumerate", reason=exc.reason,
                                      message=str(exc)))
            items.append(Sample(key=key, source_id=source_id, file_name=f"{self.images_dir}/{img.name}",
                                image_path=img, instances=tuple(instances), rejects=tuple(bad)))
        return split_scan(items)

    def samples(self) -> Iterator[Sample]:
        yield from remember_scan(self, self._scan())[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan)[1])

    def _mask_instances(self, mask_path: Path) -> list[InstanceSource]:
        base = f"{self.name}/mask/{mask_path.name}"
        rel = f"{self.masks_dir}/{mask_path.name}"
        if self.mask_rule == "band128" or self.merge_objects:
            return [InstanceSource(source_id=base, payload=(rel, None), metadata={"mask_file": rel})]
        if mask_mode(mask_path, source_id=base) != "P":
            return [InstanceSource(source_id=base, payload=(rel, None), metadata={"mask_file": rel})]
        arr, _ = open_mask_file(mask_path, source_id=base)
        values = [v for v in present_values(arr) if v not in (0, VOID_INDEX)]
        return [
            InstanceSource(source_id=f"{base}#{v}", payload=(rel, v), metadata={"mask_file": rel, "object_index": v})
            for v in values
        ]

    # ------------------------------------------------------------------ decoding
    def file_metadata(self) -> dict[str, str]:
        return {"source_layout": f"{self.images_dir}/ + {self.masks_dir}/", "mask_rule": self.mask_rule}

    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        return read_image_file(sample.image_path, source_id=sample.source_id)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        decoded: dict[str, tuple[np.ndarray, str]] = {}
        out: list[InstanceMask | Reject] = []
        for src in sample.instances:
            rel, index = src.payload
            if rel not in decoded:
                try:
                    decoded[rel] = open_mask_file(self.root / rel, source_id=src.source_id,
                                                  palette_to_rgb=self.mask_rule == "band128")
                except RecordError as exc:
                    out.append(Reject(source_id=src.source_id, stage="mask", reason=exc.reason, message=str(exc)))
                    continue
            arr, mode = decoded[rel]
            if arr.shape[:2] != (height, width):
                out.append(size_mismatch(src.source_id, rel, arr.shape, height, width))
                continue
            mask, ignore = self._decode(arr, mode, index)
            if not mask.any():
                out.append(empty_mask(src.source_id, rel))
                continue
            out.append(InstanceMask(source_id=src.source_id, category_id=-1, mask=mask, ignore=ignore,
                                    metadata=dict(src.metadata)))
        return out

    def _decode(self, arr: np.ndarray, mode: str, index: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, ignore) for one instance of a decoded mask file; shapes (H, W) bool."""
        if self.mask_rule == "band128":
            chan = bgr_channel0(arr, mode)
            ignore = chan == IGNORE_VALUE_BAND
            return chan > IGNORE_VALUE_BAND, (ignore if ignore.any() else None)
        if mode == "P":
            void = arr == VOID_INDEX
            mask = (arr != 0) & ~void if index is None else arr == index
            return mask, (void if void.any() else None)
        chan = arr.max(axis=2) if arr.ndim == 3 else arr
        return chan > 0, None


def bgr_channel0(arr: np.ndarray, mode: str) -> np.ndarray:
    """The channel RITM reads as ``cv2.imread(path)[:, :, 0]``: blue for RGB(A) files, the value for gray files.

    Palette files must already be looked up (``open_mask_file(..., palette_to_rgb=True)``), as OpenCV does.
    """
    if arr.ndim == 2:
        return arr.astype(np.uint8) if mode != "1" else arr.astype(np.uint8) * 255
    return arr[:, :, 2]


def add_root_argument(parser: argparse.ArgumentParser, default_name: str) -> None:
    """``--root`` and ``--name``, common to every folder-layout benchmark."""
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder (layout: see below)")
    parser.add_argument("--name", default=default_name,
                        help=f"dataset name stored in the shards (default {default_name})")
