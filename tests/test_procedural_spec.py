"""datasets_spec.procedural: seeded, reusable, valid COCO JSON whose masks the COCO spec decodes exactly."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from datasets_spec import spec_module
from datasets_spec.procedural import ProceduralConfig, generate, make_spec, render_scene

SMALL = ProceduralConfig(seed=3, num_images=4, min_size=64, max_size=96, max_objects=3, min_visible_px=16)


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(tmp_path / "a", SMALL)
    generate(tmp_path / "b", SMALL)
    generate(tmp_path / "c", ProceduralConfig(**{**_fields(SMALL), "seed": 4}))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _fields(config):
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_image_i_does_not_depend_on_the_image_count(tmp_path):
    _, few = generate(tmp_path / "few", SMALL)
    _, more = generate(tmp_path / "more", ProceduralConfig(**{**_fields(SMALL), "num_images": 6}))
    first = (tmp_path / "few" / "images" / "procedural_000002.jpg").read_bytes()
    assert first == (tmp_path / "more" / "images" / "procedural_000002.jpg").read_bytes()


def test_reused_when_unchanged_regenerated_when_config_changes(tmp_path):
    images, ann = generate(tmp_path, SMALL)
    stamp = ann.stat().st_mtime_ns
    generate(tmp_path, SMALL)
    assert ann.stat().st_mtime_ns == stamp
    generate(tmp_path, ProceduralConfig(**{**_fields(SMALL), "num_images": 5}))
    assert len(json.loads(ann.read_text())["images"]) == 5


def test_json_is_valid_coco_and_masks_are_the_visible_regions(tmp_path):
    images, ann = generate(tmp_path, SMALL)
    coco = COCO(str(ann))
    assert len(coco.getImgIds()) == SMALL.num_images
    for index, image_id in enumerate(sorted(coco.getImgIds())):
        _, objects = render_scene(np.random.default_rng([SMALL.seed, index]), SMALL)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(objects) >= 1
        union = np.zeros_like(objects[0][1], dtype=int)
        for record, (category, visible) in zip(anns, objects):
            decoded = coco.annToMask(record).astype(bool)
            np.testing.assert_array_equal(decoded, visible)
            assert record["category_id"] == category and record["area"] == visible.sum() >= SMALL.min_visible_px
            union += decoded
        assert union.max() == 1  # visible masks never overlap


def test_registered_and_read_through_the_coco_spec(tmp_path):
    module = spec_module("procedural")
    spec = make_spec(tmp_path, SMALL)
    samples = sorted(spec.samples(), key=lambda s: s.key)
    assert spec.name == "procedural" and len(samples) == SMALL.num_images
    assert module.__name__ == "datasets_spec.procedural"
    first = samples[0]
    data = spec.load_image(first)
    assert isinstance(data, bytes) and data == (tmp_path / "images" / first.file_name).read_bytes()
    masks = spec.load_masks(first, first.height, first.width)
    _, objects = render_scene(np.random.default_rng([SMALL.seed, 0]), SMALL)
    assert [m.mask.astype(bool).sum() for m in masks] == [v.sum() for _, v in objects]


@pytest.mark.parametrize("bad", [{"num_images": 0}, {"min_size": 300}, {"max_objects": 1}, {"min_visible_px": 0}])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ProceduralConfig(**bad)
