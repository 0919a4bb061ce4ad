"""Hypersim frames, ``flip convert hypersim --root DIR --out DIR [--image-source tonemap|color_hdf5]
[--instance-source semantic_instance|render_entity_id] [--min-pixels N]``.

Expected layout (``apple/ml-hypersim`` README, "Dataset format")::

    DIR/ai_{VVV}_{NNN}/images/
      scene_cam_{XX}_final_preview/frame.{IIII}.tonemap.jpg             tonemapped RGB, 1024x768 (default image)
      scene_cam_{XX}_final_hdf5/frame.{IIII}.color.hdf5                 HDR RGB float16, dataset "dataset" (H, W, 3)
      scene_cam_{XX}_geometry_hdf5/frame.{IIII}.semantic_instance.hdf5  int ids, dataset "dataset" (H, W); -1 = none
      scene_cam_{XX}_geometry_hdf5/frame.{IIII}.render_entity_id.hdf5   finer int ids, same container; -1 = none
      scene_cam_{XX}_geometry_hdf5/frame.{IIII}.semantic.hdf5           NYU40 class per pixel (optional); -1 = none

Every id >= 0 of the chosen instance map is one instance. Its category is the most frequent NYU40 label (1..40)
among its labelled pixels in ``semantic.hdf5`` when that file exists, else -1 (also -1 when all its pixels are -1
there). Rejects: instances below ``--min-pixels`` pixels (``too_small``, default 16: our choice, FLIP publishes
none), ids < -1 in the instance map or semantic labels other than -1 and 1..40 under an instance
(``unknown_label``), maps that are not 2-D (``bad_shape``) or not the image size (``size_mismatch``).

``--image-source color_hdf5`` tonemaps the HDR frame like the toolkit's
``code/python/tools/scene_generate_images_tonemap.py``: brightness = 0.3 R + 0.59 G + 0.11 B over pixels whose
``render_entity_id`` != -1, scale = 0.8**2.2 / (90th percentile of brightness) (0 if that is < 1e-4, 1 if no
valid pixel), rgb = clip(max(scale * hdr, 0)**(1/2.2), 0, 1), then ``floor(255 * rgb)`` to uint8 (matplotlib's
``imsave`` conversion). Which tonemap and which instance map FLIP used is unknown (benchmarks.md 3.2).

Keys: ``VVV * 10**9 + NNN * 10**6 + XX * 10**4 + IIII`` from the scene, camera and frame names.
Enumeration reads every instance map once (threads) to list its ids.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from datasets_spec._common import (
    id_map_instances,
    present_values,
    read_image_file,
    recall_scan,
    remember_scan,
    split_scan,
    threaded_map,
)
from datasets_spec.base import InstanceMask, InstanceSource, RecordError, Reject, Sample, SpecError

logger = logging.getLogger(__name__)

__all__ = ["HypersimSpec", "tonemap_hypersim", "add_cli_arguments", "from_cli_args"]

IMAGE_SOURCES = ("tonemap", "color_hdf5")
INSTANCE_SOURCES = ("semantic_instance", "render_entity_id")
NYU40_IDS = range(1, 41)
_FRAME_RE = re.compile(r"^ai_(\d{3})_(\d{3})/images/scene_cam_(\d{2})_geometry_hdf5/frame\.(\d{4})\.[a-z_]+\.hdf5$")

# Toolkit constants (scene_generate_images_tonemap.py).
_GAMMA = 1.0 / 2.2
_PERCENTILE = 90
_BRIGHTNESS_TARGET = 0.8
_EPS = 1e-4


def read_hdf5_map(path: Path, *, source_id: str) -> np.ndarray:
    """The ``dataset`` array of a Hypersim per-frame HDF5 file.

    Raises:
        RecordError: ``missing_file`` or ``unreadable`` (not HDF5, no ``dataset``) naming the file.
    """
    try:
        with h5py.File(path, "r") as f:
            if "dataset" not in f:
                raise RecordError("unreadable", f"{source_id}: {path} has no 'dataset' (keys {sorted(f)})")
            return f["dataset"][()]
    except FileNotFoundError:
        raise RecordError("missing_file", f"{source_id}: {path} does not exist") from None
    except OSError as exc:
        raise RecordError("unreadable", f"{source_id}: cannot read HDF5 {path}: {exc}") from None


def tonemap_hypersim(hdr: np.ndarray, render_entity_id: np.ndarray | None) -> np.ndarray:
    """Tonemap a Hypersim HDR frame as the toolkit does (module docstring).

    Args:
        hdr: (H, W, 3) float linear RGB.
        render_entity_id: (H, W) int, -1 where no geometry; None treats every pixel as valid.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rgb = hdr.astype(np.float32)
    valid = np.ones(rgb.shape[:2], bool) if render_entity_id is None else render_entity_id != -1
    if not valid.any():
        scale = 1.0
    else:
        brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
        current = float(np.percentile(brightness[valid], _PERCENTILE))
        scale = 0.0 if current < _EPS else _BRIGHTNESS_TARGET ** (1.0 / _GAMMA) / current
    out = np.clip(np.power(np.maximum(scale * rgb, 0.0), _GAMMA), 0.0, 1.0)
    return (out * 255.0).astype(np.uint8)


@dataclass(frozen=True, kw_only=True, slots=True)
class HypersimSpec:
    """Hypersim frames with one instance map each (module docstring)."""

    root: Path
    """Folder holding the ``ai_VVV_NNN`` scene folders."""
    name: str = "hypersim"
    """Dataset name stored in the shards."""
    image_source: str = "tonemap"
    """``tonemap`` (the released ``.tonemap.jpg``) or ``color_hdf5`` (tonemap the HDR frame here)."""
    instance_source: str = "semantic_instance"
    """``semantic_instance`` or ``render_entity_id``."""
    min_pixels: int = 16
    """Instances with fewer pixels are rejected (``too_small``)."""
    enumerate_threads: int = 4
    """Threads reading instance maps during enumeration."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.image_source not in IMAGE_SOURCES:
            raise ValueError(f"image_source must be one of {IMAGE_SOURCES}, got {self.image_source!r}")
        if self.instance_source not in INSTANCE_SOURCES:
            raise ValueError(f"instance_source must be one of {INSTANCE_SOURCES}, got {self.instance_source!r}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")

    # ------------------------------------------------------------------ enumeration
    def _instance_files(self) -> list[Path]:
        if not self.root.is_dir():
            raise SpecError(f"hypersim: root {self.root} is not a folder")
        pattern = f"ai_*_*/images/scene_cam_*_geometry_hdf5/frame.*.{self.instance_source}.hdf5"
        files = sorted(self.root.glob(pattern))
        if not files:
            raise SpecError(f"hypersim: no {pattern} under {self.root} (see `flip convert hypersim --help`)")
        return files

    def _paths(self, inst_file: Path) -> dict[str, Path]:
        geo = inst_file.parent
        cam = geo.name.removeprefix("scene_").removesuffix("_geometry_hdf5")
        frame = inst_file.name.split(".")[1]
        images = geo.parent
        return {
            "instance": inst_file,
            "semantic": geo / f"frame.{frame}.semantic.hdf5",
            "render_entity_id": geo / f"frame.{frame}.render_entity_id.hdf5",
            "tonemap": images / f"scene_{cam}_final_preview" / f"frame.{frame}.tonemap.jpg",
            "color_hdf5": images / f"scene_{cam}_final_hdf5" / f"frame.{frame}.color.hdf5",
        }

    def _scan(self, inst_file: Path) -> Sample | Reject:
        rel = inst_file.relative_to(self.root).as_posix()
        m = _FRAME_RE.match(rel)
        source_id = f"hypersim/{rel.split('/')[0]}/{inst_file.parent.name}/{inst_file.name.split('.')[1]}"
        if not m:
            return Reject(source_id=source_id, stage="enumerate", reason="bad_name",
                          message=f"{rel} does not follow ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.*")
        try:
            ids = read_hdf5_map(inst_file, source_id=source_id)
        except RecordError as exc:
            return Reject(source_id=source_id, stage="enumerate", reason=exc.reason, message=str(exc))
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            return Reject(source_id=source_id, stage="enumerate", reason="bad_shape",
                          message=f"{rel}: expected a 2-D integer id map, got {ids.dtype} {ids.shape}")
        vvv, nnn, cam, frame = (int(g) for g in m.groups())
        paths = self._paths(inst_file)
        image = paths[self.image_source]
        instances, rejects = [], []
        for v in present_values(ids):
            sid = f"{source_id}/{v}"
            if v >= 0:
                instances.append(InstanceSource(source_id=sid, payload=v, metadata={"instance_id": v}))
            elif v < -1:
                rejects.append(Reject(source_id=sid, stage="enumerate", reason="unknown_label",
                                      message=f"{sid}: id {v} in {rel} (only -1 means unlabelled)"))
        return Sample(
            key=vvv * 10**9 + nnn * 10**6 + cam * 10**4 + frame,
            source_id=source_id,
            file_name=image.relative_to(self.root).as_posix(),
            image_path=image,
            width=int(ids.shape[1]),
            height=int(ids.shape[0]),
            instances=tuple(instances),
            payload={k: p.relative_to(self.root).as_posix() for k, p in paths.items()},
            metadata={"scene": rel.split("/")[0], "camera": f"cam_{cam:02d}", "frame": frame},
            rejects=tuple(rejects),
        )

    def _scan_split(self) -> tuple[list[Sample], list[Reject]]:
        return split_scan(threaded_map(self._scan, self._instance_files(), workers=self.enumerate_threads))

    def samples(self) -> Iterator[Sample]:
        yield from remember_scan(self, self._scan_split())[0]

    def enumeration_rejects(self) -> list[Reject]:
        return list(recall_scan(self, self._scan_split)[1])

    def file_metadata(self) -> dict[str, str]:
        return {"image_source": self.image_source, "instance_source": self.instance_source,
                "min_pixels": str(self.min_pixels)}

    # ------------------------------------------------------------------ decoding
    def load_image(self, sample: Sample) -> bytes | np.ndarray:
        if self.image_source == "tonemap":
            return read_image_file(sample.image_path, source_id=sample.source_id)
        hdr = read_hdf5_map(sample.image_path, source_id=sample.source_id)
        if hdr.ndim != 3 or hdr.shape[2] != 3:
            raise RecordError("bad_shape", f"{sample.source_id}: {sample.image_path} is {hdr.shape}, not (H, W, 3)")
        entity = read_hdf5_map(self.root / sample.payload["render_entity_id"], source_id=sample.source_id)
        if entity.shape != hdr.shape[:2]:
            raise RecordError("size_mismatch", f"{sample.source_id}: render_entity_id {entity.shape} vs color "
                                               f"{hdr.shape[:2]}")
        return tonemap_hypersim(hdr, entity)

    def load_masks(self, sample: Sample, height: int, width: int) -> list[InstanceMask | Reject]:
        ids = read_hdf5_map(self.root / sample.payload["instance"], source_id=sample.source_id)
        items = id_map_instances(ids, sample.instances, height=height, width=width, what=sample.payload["instance"],
                                 min_pixels=self.min_pixels)
        semantic_path = self.root / sample.payload["semantic"]
        if not semantic_path.exists():
            return items
        semantic = read_hdf5_map(semantic_path, source_id=sample.source_id)
        if semantic.shape != (height, width):
            raise RecordError("size_mismatch", f"{sample.source_id}: {semantic_path} is {semantic.shape}, image is "
                                               f"{(height, width)}")
        return [self._with_category(item, semantic) for item in items]

    @staticmethod
    def _with_category(item: InstanceMask | Reject, semantic: np.ndarray) -> InstanceMask | Reject:
        if isinstance(item, Reject):
            return item
        labels, counts = np.unique(semantic[item.mask], return_counts=True)
        unknown = sorted(int(v) for v in labels if v != -1 and v not in NYU40_IDS)
        if unknown:
            return Reject(source_id=item.source_id, stage="mask", reason="unknown_label",
                          message=f"{item.source_id}: semantic labels {unknown} under the instance are not NYU40 "
                                  "ids (1..40) or -1")
        labelled = labels != -1
        if not labelled.any():
            return item  # every pixel unlabelled in semantic.hdf5: category stays -1
        label = int(labels[labelled][np.argmax(counts[labelled])])
        return InstanceMask(source_id=item.source_id, category_id=label, mask=item.mask, ignore=item.ignore,
                            metadata={**item.metadata, "nyu40_id": label})


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder holding the ai_VVV_NNN scene folders")
    parser.add_argument("--name", default="hypersim", help="dataset name stored in the shards (default hypersim)")
    parser.add_argument("--image-source", choices=IMAGE_SOURCES, default="tonemap",
                        help="tonemap: the released frame.IIII.tonemap.jpg; color_hdf5: tonemap the HDR color.hdf5")
    parser.add_argument("--instance-source", choices=INSTANCE_SOURCES, default="semantic_instance",
                        help="which per-frame id map defines instances (default semantic_instance)")
    parser.add_argument("--min-pixels", type=int, default=16, help="reject smaller instances (default 16)")


def from_cli_args(args: argparse.Namespace) -> HypersimSpec:
    return HypersimSpec(root=args.root, name=args.name, image_source=args.image_source,
                        instance_source=args.instance_source, min_pixels=args.min_pixels)
