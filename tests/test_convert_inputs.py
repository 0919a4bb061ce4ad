"""Bad input, record by record (no Ray): each case is a reject naming the record, never an exception.

``make_bad_dataset`` builds one small COCO-format dataset holding every bad-input case of the issue; the Ray
end-to-end test (``test_convert.py``) converts it and checks that the run continues past all of them.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets_spec.coco import CocoSpec
from flip_core.convert.task import build_image
from flip_core.images import ENCODING_REENCODED_JPEG, ENCODING_SOURCE_JPEG, decode_mask_png, prepare_image

W, H = 64, 48
SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]


def _encoded(mode: str, fmt: str, **kw) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (the pixel data is a few bytes)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# image id -> (file name, bytes or None for "do not create", declared (w, h), expected image-level reject or None)
BAD_IMAGES = {
    1: ("good.jpg", lambda: _encoded("RGB", "JPEG", quality=90), (W, H), None),
    2: ("missing.jpg", None, (W, H), "missing_file"),
    3: ("truncated.jpg", lambda: _encoded("RGB", "JPEG", quality=90)[:900], (W, H), "unreadable"),
    4: ("wrongsize.jpg", lambda: _encoded("RGB", "JPEG"), (100, 100), "size_mismatch"),
    5: ("../escape.jpg", None, (W, H), "path_escape"),
    6: ("bomb.png", bomb_png, (30000, 30000), "decompression_bomb"),
    7: ("gray.png", lambda: _encoded("L", "PNG"), (W, H), None),
    8: ("cmyk.jpg", lambda: _encoded("CMYK", "JPEG"), (W, H), None),
    9: ("garbage.jpg", lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, (W, H), "unreadable"),
    10: ("crowdonly.jpg", lambda: _encoded("RGB", "JPEG", progressive=True), (W, H), "no_instances"),
    11: ("progressive.jpg", lambda: _encoded("RGB", "JPEG", progressive=True), (W, H), None),
}


def make_bad_dataset(root: Path) -> tuple[Path, Path]:
    """Write the dataset; returns ``(images_dir, annotations_json)``."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id, (name, make, (w, h), _) in BAD_IMAGES.items():
        if make is not None:
            (images_dir / name).write_bytes(make())
        images.append({"id": image_id, "file_name": name, "width": w, "height": h, "license": 1})
        annotations.append({"id": 100 + image_id, "image_id": image_id, "category_id": 1, "segmentation": [SQUARE],
                            "iscrowd": int(image_id == 10)})
    annotations += [
        {"id": 201, "image_id": 1, "category_id": 2, "segmentation": [[1, 1, 5, 5]]},  # < 3 points
        {"id": 202, "image_id": 1, "category_id": 2, "segmentation": [[-50, -50, -40, -50, -40, -40]]},  # empty
        {"id": 203, "image_id": 1, "category_id": 2, "segmentation": {"size": [H + 1, W], "counts": [H * W]}},
        {"id": 204, "image_id": 999, "category_id": 2, "segmentation": [SQUARE]},  # unknown image
    ]
    path = root / "instances_bad.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}, {"id": 2}]}))
    return images_dir, path


# every expected reject row: (source_id, reason)
EXPECTED_REJECTS = {
    ("bad/ann/201", "polygon_lt_3_points"), ("bad/ann/202", "empty_mask"), ("bad/ann/203", "rle_size_mismatch"),
    ("bad/ann/204", "unknown_image"), ("bad/ann/110", "crowd"),
    *((f"bad/img/{i}", reason) for i, (*_, reason) in BAD_IMAGES.items() if reason),
}


@pytest.fixture
def bad_spec(tmp_path):
    images_dir, path = make_bad_dataset(tmp_path)
    return CocoSpec(images=images_dir, annotations=path, name="bad")


def _by_key(spec):
    return {s.key: s for s in spec.samples()}


@pytest.mark.parametrize("image_id", sorted(i for i, v in BAD_IMAGES.items() if v[3] and v[3] != "path_escape"))
def test_bad_image_is_rejected_with_a_message_naming_it(bad_spec, image_id):
    name, _, _, reason = BAD_IMAGES[image_id]
    image, rejects = build_image(bad_spec, _by_key(bad_spec)[image_id], max_pixels=10**7)
    assert image is None
    assert rejects[-1].reason == reason and rejects[-1].stage == "image"
    assert rejects[-1].message.startswith(f"bad/img/{image_id}")
    if reason in ("missing_file", "size_mismatch"):
        assert name in rejects[-1].message


def test_path_escape_is_an_enumeration_reject(bad_spec):
    samples = _by_key(bad_spec)
    assert 5 not in samples
    (reject,) = [r for r in bad_spec.enumeration_rejects() if r.reason == "path_escape"]
    assert reject.source_id == "bad/img/5" and "../escape.jpg" in reject.message


def test_good_image_keeps_good_instances_and_rejects_the_rest(bad_spec):
    image, rejects = build_image(bad_spec, _by_key(bad_spec)[1], max_pixels=10**7)
    assert image is not None and image.encoding == ENCODING_SOURCE_JPEG
    assert [i.source_id for i in image.instances] == ["bad/ann/101"]
    assert {(r.source_id, r.reason) for r in rejects} == {
        ("bad/ann/201", "polygon_lt_3_points"), ("bad/ann/202", "empty_mask"), ("bad/ann/203", "rle_size_mismatch")}
    inst = image.instances[0]
    mask = decode_mask_png(inst.mask_png)
    assert mask.shape == (H, W) and inst.area_px == mask.sum()
    np.testing.assert_array_equal(inst.bbox, [10, 10, 29, 29])


@pytest.mark.parametrize(("image_id", "source_format"), [(7, "PNG/L"), (8, "JPEG/CMYK")])
def test_non_rgb_jpeg_sources_are_reencoded(bad_spec, image_id, source_format):
    image, rejects = build_image(bad_spec, _by_key(bad_spec)[image_id], max_pixels=10**7)
    assert rejects == [] and image.encoding == ENCODING_REENCODED_JPEG and image.source_format == source_format
    assert Image.open(io.BytesIO(image.jpeg)).format == "JPEG" and Image.open(io.BytesIO(image.jpeg)).mode == "RGB"


def test_progressive_jpeg_is_kept(bad_spec):
    sample = _by_key(bad_spec)[11]
    image, _ = build_image(bad_spec, sample, max_pixels=10**7)
    assert image.encoding == ENCODING_SOURCE_JPEG and image.jpeg == sample.image_path.read_bytes()


def test_pixel_limit_applies_to_normal_images():
    data = _encoded("RGB", "JPEG")
    with pytest.raises(Exception) as info:
        prepare_image(data, source_id="x/img/1", max_pixels=W * H - 1)
    assert info.value.reason == "decompression_bomb" and "x/img/1" in str(info.value)
    assert prepare_image(data, source_id="x/img/1", max_pixels=W * H).width == W


def test_sixteen_bit_png_is_reencoded():
    arr = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 20).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    enc = prepare_image(out.getvalue(), source_id="x")
    assert enc.encoding == ENCODING_REENCODED_JPEG and enc.source_format.startswith("PNG/I")
    assert (enc.width, enc.height) == (W, H)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32, np.int16])
def test_build_instance_matches_full_image_helpers(dtype):
    from datasets_spec.base import InstanceMask
    from flip_core.convert.task import build_instance
    from flip_core.gaussian import mask_bbox, mask_moments

    rng = np.random.default_rng(5)
    full = np.zeros((37, 53), dtype=dtype)
    full[0:9, 3:40] = (rng.random((9, 37)) < 0.5).astype(dtype)
    if dtype is np.float32:
        full[20, 20] = 0.4  # below the 0.5 threshold: not inside
    inst = build_instance(InstanceMask(source_id="x", category_id=3, mask=full), 37, 53)
    binary = full > 0.5
    np.testing.assert_array_equal(inst.bbox, mask_bbox(binary))
    np.testing.assert_allclose(inst.moments, mask_moments(binary), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(decode_mask_png(inst.mask_png), binary)
    assert inst.area_px == binary.sum() and inst.category_id == 3
