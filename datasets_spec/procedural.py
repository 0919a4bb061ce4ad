"""Procedural scenes: a small seeded COCO-format dataset generated on the fly (the ``flip run`` default).

Layout written under ``--root`` (created when missing, reused when it already holds the same generation)::

    ROOT/
      images/procedural_000001.jpg ...     baseline RGB JPEGs (quality 95), kept byte-for-byte by the converter
      annotations/instances.json           COCO instances JSON; every annotation is an RLE of the *visible* mask
      annotations/generation.json          the generator settings (seed, counts, sizes) used for ROOT

Each image is a textured background (a linear colour gradient plus per-pixel noise) with 2 to ``max_objects``
overlapping shapes (ellipse, rectangle, triangle, 5-pointed star) painted back to front, each in its own colour with
a stripe or checker texture. Later shapes occlude earlier ones; an annotation's mask is what stays visible. Shapes
whose visible part is smaller than ``min_visible_px`` are not annotated (a generator choice, recorded in
``generation.json``; the converter never sees them, so nothing is dropped downstream). Categories: 1 ellipse,
2 rectangle, 3 triangle, 4 star.

Everything is drawn from ``numpy.random.default_rng([seed, image_index])``, so the same seed gives the same pixels
and JSON on every machine with the same Pillow JPEG encoder (image *i* does not depend on how many images come
before it). Conversion then goes through the COCO spec (:mod:`datasets_spec.coco`) unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)

__all__ = ["ProceduralConfig", "generate", "make_spec", "add_cli_arguments", "from_cli_args", "CATEGORIES"]

CATEGORIES = ({"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"},
              {"id": 3, "name": "triangle"}, {"id": 4, "name": "star"})


@dataclass(frozen=True, kw_only=True, slots=True)
class ProceduralConfig:
    """Generator settings; the whole config is stored in ``generation.json`` and decides whether ROOT is reused."""

    seed: int = 0
    """Seed of every random draw (image *i* uses ``default_rng([seed, i])``)."""
    num_images: int = 16
    """Number of images."""
    min_size: int = 160
    """Smallest image side in pixels."""
    max_size: int = 256
    """Largest image side in pixels (width and height are drawn independently in [min_size, max_size])."""
    max_objects: int = 4
    """Largest number of shapes per image (at least 2 are drawn)."""
    min_visible_px: int = 64
    """Shapes whose visible area is below this many pixels get no annotation."""

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if not 32 <= self.min_size <= self.max_size:
            raise ValueError(f"need 32 <= min_size <= max_size, got min_size={self.min_size}, max_size={self.max_size}")
        if self.max_objects < 2:
            raise ValueError(f"max_objects must be >= 2, got {self.max_objects}")
        if self.min_visible_px < 1:
            raise ValueError(f"min_visible_px must be >= 1, got {self.min_visible_px}")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: a random two-colour linear gradient plus Gaussian noise (sigma 8)."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
    img = c0 + (c1 - c0) * t[..., None]
    return img + rng.normal(0.0, 8.0, size=img.shape)


def _shape_mask(rng: np.random.Generator, category: int, height: int, width: int) -> np.ndarray:
    """(H, W) bool: one shape of ``category`` (see :data:`CATEGORIES`) at a random place, size and rotation."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    side = min(height, width)
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    radius = rng.uniform(0.12, 0.35) * side
    if category == 1:
        rx, ry = radius, radius * rng.uniform(0.4, 1.0)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
        if rng.uniform() < 0.5:  # rotate ellipses too, about their centre
            canvas = canvas.rotate(float(rng.uniform(0, 180)), center=(cx, cy))
        return np.asarray(canvas, dtype=bool)
    if category == 2:
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
        corners *= [radius, radius * rng.uniform(0.3, 1.0)]
    elif category == 3:
        angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, size=3)
        corners = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        corners = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    points = corners @ rot.T + [cx, cy]
    draw.polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: a solid colour modulated by stripes or a checkerboard (period 6-20 px)."""
    colour = rng.uniform(0, 255, size=3)
    period = rng.uniform(6, 20)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.uniform() < 0.5:
        theta = rng.uniform(0, np.pi)
        pattern = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period) > 0
    else:
        pattern = ((xx // period) + (yy // period)) % 2 == 0
    shade = np.where(pattern, 1.0, rng.uniform(0.5, 0.8)).astype(np.float32)
    return colour * shade[..., None]


def render_scene(rng: np.random.Generator, config: ProceduralConfig) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draw one scene.

    Returns:
        ``image`` (H, W, 3) uint8 RGB and ``objects``: ``(category_id, visible_mask (H, W) bool)`` for every shape
        whose visible area is at least ``config.min_visible_px``, back to front.
    """
    width, height = (int(v) for v in rng.integers(config.min_size, config.max_size + 1, size=2))
    image = _background(rng, height, width)
    labels = np.full((height, width), -1, dtype=np.int32)  # index of the shape visible at each pixel
    categories = []
    for k in range(int(rng.integers(2, config.max_objects + 1))):
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        shape = _shape_mask(rng, category, height, width)
        texture = _texture(rng, height, width)
        image[shape] = texture[shape]
        labels[shape] = k
        categories.append(category)
    objects = []
    for k, category in enumerate(categories):
        visible = labels == k
        if int(visible.sum()) >= config.min_visible_px:
            objects.append((category, visible))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def _annotation(ann_id: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    """COCO annotation dict with a compressed RLE of ``mask`` (H, W) bool; bbox ``[x, y, w, h]`` in pixels."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": 0, "area": int(mask.sum()),
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
    }


def generate(root: Path, config: ProceduralConfig) -> tuple[Path, Path]:
    """Write (or reuse) the dataset under ``root``.

    ``root`` is reused untouched when ``annotations/generation.json`` records the same config and every image is
    present; otherwise the images and JSON are (re)written, the JSON last (tmp name + atomic rename).

    Returns:
        ``(images_dir, annotations_json)``.
    """
    root = Path(root)
    images_dir, ann_dir = root / "images", root / "annotations"
    ann_path, gen_path = ann_dir / "instances.json", ann_dir / "generation.json"
    wanted = asdict(config)
    if _reusable(gen_path, ann_path, images_dir, wanted):
        logger.info("reusing procedural dataset in %s (seed %d, %d images)", root, config.seed, config.num_images)
        return images_dir, ann_path
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(config.num_images):
        image, objects = render_scene(np.random.default_rng([config.seed, index]), config)
        image_id, file_name = index + 1, f"procedural_{index + 1:06d}.jpg"
        Image.fromarray(image).save(images_dir / file_name, format="JPEG", quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": image.shape[1], "height": image.shape[0],
                       "license": 0})
        for category, mask in objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, category, mask))
    coco = {"info": {"description": "FLIP procedural scenes", "seed": config.seed}, "licenses": [],
            "images": images, "annotations": annotations, "categories": list(CATEGORIES)}
    _write_json_atomic(ann_path, coco)
    _write_json_atomic(gen_path, wanted)
    logger.info("generated %d procedural images with %d instances in %s", len(images), len(annotations), root)
    return images_dir, ann_path


def _reusable(gen_path: Path, ann_path: Path, images_dir: Path, wanted: dict) -> bool:
    if not (gen_path.is_file() and ann_path.is_file()):
        return False
    try:
        if json.loads(gen_path.read_text()) != wanted:
            return False
    except json.JSONDecodeError:
        return False
    return all((images_dir / f"procedural_{i + 1:06d}.jpg").is_file() for i in range(wanted["num_images"]))


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def make_spec(root: Path, config: ProceduralConfig | None = None):
    """Generate (or reuse) the scenes under ``root``; return the COCO spec reading them (dataset ``procedural``)."""
    from datasets_spec import coco

    images_dir, ann_path = generate(root, config or ProceduralConfig())
    parser = argparse.ArgumentParser(add_help=False)
    coco.add_cli_arguments(parser)
    return coco.from_cli_args(parser.parse_args(["--images", str(images_dir), "--annotations", str(ann_path),
                                                 "--name", "procedural"]))


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``flip convert procedural``."""
    defaults = ProceduralConfig()
    parser.add_argument("--root", required=True, help="directory to write (or reuse) the generated dataset in")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="generator seed (default %(default)s)")
    parser.add_argument("--num-images", type=int, default=defaults.num_images,
                        help="number of images (default %(default)s)")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects,
                        help="most shapes per image, at least 2 (default %(default)s)")


def from_cli_args(args: argparse.Namespace):
    """Build the spec from ``flip convert procedural`` arguments (generates the data first)."""
    config = ProceduralConfig(seed=args.seed, num_images=args.num_images, max_objects=args.max_objects)
    return make_spec(Path(args.root), config)
