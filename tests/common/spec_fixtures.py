"""Format-exact dataset fixtures for the spec tests, and a helper that runs a spec like the converter does.

Each builder writes a tiny source tree that follows the official on-disk format; the format source is named in
each docstring. They return what the tests need to check counts against the source.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image
from pycocotools import mask as mask_utils

from datasets_spec.base import InstanceMask, Reject


def decode_any(image: bytes | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of what ``load_image`` returned."""
    if isinstance(image, np.ndarray):
        return image
    with Image.open(io.BytesIO(image)) as img:
        return np.asarray(img.convert("RGB"))


def materialize(spec) -> dict[str, tuple]:
    """Run ``samples() -> load_image -> load_masks`` like the converter; ``{source_id: (sample, rgb, items)}``."""
    out = {}
    for sample in spec.samples():
        rgb = decode_any(spec.load_image(sample))
        items = spec.load_masks(sample, *rgb.shape[:2])
        assert len(items) == len(sample.instances)
        for item in items:
            assert isinstance(item, (InstanceMask, Reject))
            if isinstance(item, InstanceMask):
                assert item.mask.shape == rgb.shape[:2]
                assert item.ignore is None or (item.ignore.shape == rgb.shape[:2] and item.ignore.any())
        out[sample.source_id] = (sample, rgb, items)
    return out


def masks_of(result: dict[str, tuple]) -> list[InstanceMask]:
    return [m for _, _, items in result.values() for m in items if isinstance(m, InstanceMask)]


def rejects_of(result: dict[str, tuple]) -> list[Reject]:
    return [m for _, _, items in result.values() for m in items if isinstance(m, Reject)]


def rgb_png(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Write a random RGB PNG and return its pixels."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def rgb_jpeg(path: Path, height: int, width: int, seed: int = 0) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=90)


# --------------------------------------------------------------------------- KITTI-360
KITTI_SEQ = "2013_05_28_drive_0003_sync"


def kitti360_tree(root: Path, *, size: tuple[int, int] = (40, 64)) -> dict:
    """KITTI-360 layout (cvlibs.net/datasets/kitti-360/documentation.php, "2D Data Format"): rectified 8-bit RGB
    PNGs in ``data_2d_raw/<seq>/image_00/data_rect``; single-channel 16-bit instance PNGs in
    ``data_2d_semantics/train/<seq>/image_00/instance`` holding ``semanticId*1000 + instanceId`` (a bare
    ``semanticId`` < 1000 for pixels without instance; kitti360Scripts ``evaluation/semantic_2d/instance.py``).

    Frame 0000000010: road (7, stuff), sky (23, stuff), car#1, car#2 (26), person#1 (24), caravan#1 (29,
    ignoreInEval), building 11000 (11 has instances; instanceId 0). Frame 0000000011: an unknown semanticId 50,
    one car, and bare 26 (car pixels without instance id). Frame 0000000012: only road and sky (no instance). Frame 0000000013: label PNG of the wrong size.
    """
    h, w = size
    raw = root / "data_2d_raw" / KITTI_SEQ / "image_00" / "data_rect"
    inst = root / "data_2d_semantics" / "train" / KITTI_SEQ / "image_00" / "instance"
    inst.mkdir(parents=True)
    frames = {}
    a = np.full((h, w), 7, np.uint16)
    a[:10] = 23
    a[12:20, 2:12] = 26001
    a[12:20, 20:30] = 26002
    a[22:30, 40:44] = 24001
    a[30:36, 50:60] = 29001
    a[0:6, 50:60] = 11000
    frames["0000000010"] = a
    b = np.full((h, w), 7, np.uint16)
    b[5:9, 5:9] = 50003
    b[20:30, 20:40] = 26005
    b[35:38, 0:5] = 26  # car pixels without instance id (a "group")
    frames["0000000011"] = b
    c = np.full((h, w), 7, np.uint16)
    c[:5] = 23
    frames["0000000012"] = c
    frames["0000000013"] = np.full((h + 2, w), 26001, np.uint16)
    for i, (frame, ids) in enumerate(frames.items()):
        rgb_png(raw / f"{frame}.png", h, w, seed=i)
        Image.fromarray(ids).save(inst / f"{frame}.png")  # uint16 -> mode I;16 PNG
    return frames


# --------------------------------------------------------------------------- Hypersim
def hypersim_frame(root: Path, scene: str, cam: str, frame: int, ids: np.ndarray, *, semantic: np.ndarray | None = None,
                   image: Path | None = None, hdr: np.ndarray | None = None) -> None:
    """One Hypersim frame (apple/ml-hypersim README "Dataset format"): HDF5 files with one dataset named
    ``dataset`` (as in the real ``frame.0000.depth_meters.hdf5`` of ../shared/data/hypersim), integer ids, -1 none."""
    images = root / scene / "images"
    geo = images / f"scene_{cam}_geometry_hdf5"
    geo.mkdir(parents=True, exist_ok=True)
    with h5py.File(geo / f"frame.{frame:04d}.semantic_instance.hdf5", "w") as f:
        f.create_dataset("dataset", data=ids.astype(np.int32), compression="gzip")
    with h5py.File(geo / f"frame.{frame:04d}.render_entity_id.hdf5", "w") as f:
        f.create_dataset("dataset", data=np.where(ids >= 0, ids + 100, -1).astype(np.int32))
    if semantic is not None:
        with h5py.File(geo / f"frame.{frame:04d}.semantic.hdf5", "w") as f:
            f.create_dataset("dataset", data=semantic.astype(np.int32))
    preview = images / f"scene_{cam}_final_preview"
    preview.mkdir(parents=True, exist_ok=True)
    if image is not None:
        (preview / f"frame.{frame:04d}.tonemap.jpg").write_bytes(image.read_bytes())
    else:
        rgb_jpeg(preview / f"frame.{frame:04d}.tonemap.jpg", *ids.shape[:2], seed=frame)
    if hdr is not None:
        final = images / f"scene_{cam}_final_hdf5"
        final.mkdir(parents=True, exist_ok=True)
        with h5py.File(final / f"frame.{frame:04d}.color.hdf5", "w") as f:
            f.create_dataset("dataset", data=hdr.astype(np.float16))


def _invert_preview(preview: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Id map of a Hypersim colour preview: the palette row of each pixel colour; black / -1 rows -> -1."""
    rgb = preview[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.full(code.shape, -1, np.int64)
    for i, (r, g, b) in enumerate(palette):
        if r >= 0 and (r, g, b) != (0, 0, 0):
            out[code == ((r << 16) | (g << 8) | b)] = i
    return out


def hypersim_real_frame(scene: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild ``ai_001_001`` frame 0 from the real fragments in ../shared/data/hypersim (SOURCES.md section 7).

    The real colour preview ``_frame.0000.semantic_instance.png`` is inverted through the real palette
    ``_detail/mesh/metadata_semantic_instance_colors.hdf5`` (row index = instance id, black = -1), the semantic
    preview through ``metadata_semantic_colors.hdf5`` (row = NYU40 id); the real tonemapped JPEG is the image.
    Returns ``(instance ids, semantic ids)``, both (768, 1024) int64.
    """
    prev = scene / "images" / "scene_cam_00_geometry_preview"
    with h5py.File(scene / "_detail/mesh/metadata_semantic_instance_colors.hdf5") as f:
        ids = _invert_preview(np.asarray(Image.open(prev / "_frame.0000.semantic_instance.png")), f["dataset"][()])
    with h5py.File(scene / "_detail/mesh/metadata_semantic_colors.hdf5") as f:
        sem = _invert_preview(np.asarray(Image.open(prev / "_frame.0000.semantic.png")), f["dataset"][()])
    tonemap = scene / "images" / "scene_cam_00_final_preview" / "_frame.0000.tonemap.jpg"
    hypersim_frame(root, "ai_001_001", "cam_00", 0, ids, semantic=sem, image=tonemap)
    return ids, sem


# --------------------------------------------------------------------------- SBD
def sbd_mat(path: Path, segmentation: np.ndarray, categories: list[int]) -> None:
    """An SBD ``inst/<id>.mat`` (benchmark_RELEASE README: struct ``GTinst`` with ``Segmentation`` (uint8 instance
    map), ``Boundaries`` (cell of sparse boundary maps, one per instance) and ``Categories`` (column of class ids))."""
    boundaries = np.empty((len(categories), 1), dtype=object)
    for k in range(len(categories)):
        m = (segmentation == k + 1).astype(np.uint8)
        edge = m ^ np.pad(m, 1)[1:-1, 2:]
        boundaries[k, 0] = scipy.sparse.csc_matrix(edge.astype(bool))
    gt = {"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries,
          "Categories": np.asarray(categories, np.uint8).reshape(-1, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTinst": gt})


# --------------------------------------------------------------------------- SA-1B
def sa1b_record(image_id: int, masks: list[np.ndarray]) -> dict:
    """SA-1B per-image JSON (segment-anything README "Dataset": image + annotations with COCO RLE)."""
    h, w = masks[0].shape
    anns = []
    for i, m in enumerate(masks):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        x, y, bw, bh = mask_utils.toBbox(rle).tolist()
        anns.append({"id": image_id * 1000 + i, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                     "bbox": [x, y, bw, bh], "area": int(m.sum()), "predicted_iou": 0.9, "stability_score": 0.95,
                     "crop_box": [0, 0, w, h], "point_coords": [[x + bw / 2, y + bh / 2]]})
    return {"image": {"image_id": image_id, "width": w, "height": h, "file_name": f"sa_{image_id}.jpg"},
            "annotations": anns}


def sa1b_members(image_id: int, height: int, width: int, n_masks: int = 2) -> tuple[bytes, bytes, list[np.ndarray]]:
    """(jpeg bytes, json bytes, masks) of one synthetic SA-1B image."""
    masks = []
    for i in range(n_masks):
        m = np.zeros((height, width), bool)
        m[(i * 7) % (height // 2): (i * 7) % (height // 2) + height // 3, i * 5: i * 5 + width // 3] = True
        masks.append(m)
    buf = io.BytesIO()
    rgb = np.random.default_rng(image_id).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), json.dumps(sa1b_record(image_id, masks)).encode(), masks


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
