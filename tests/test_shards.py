"""Shard writer/reader: reference schema (spec 1.1), exact round trips, atomic and byte-deterministic writes."""

from __future__ import annotations

import io
import pickle
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from flip_core.gaussian import mask_bbox, mask_moments
from flip_core.images import (
    decode_mask_png,
    decode_rgb,
    encode_mask_png,
    open_rgb,
    prepare_image,
    region_decoding_available,
)
from flip_core.shards import ShardImage, ShardInstance, ShardReader, sha256_file, write_shard

# name -> (dtype kind check, shape suffix, per) per spec 1.1; "img"/"inst" says which count the first axis is.
REFERENCE_SCHEMA = {
    "rgb_images": ("vlen_u8", (), "img"),
    "instance_masks": ("vlen_u8", (), "inst"),
    "sequence_indices": (np.dtype("int64"), (2,), "img"),
    "image_instance_indices": (np.dtype("int64"), (2,), "img"),
    "instance_masks_images": (np.dtype("int64"), (1,), "inst"),
    "instance_mask_bboxes": (np.dtype("float32"), (4,), "inst"),
    "positions": (np.dtype("float32"), (5,), "inst"),
    "coco_image_ids": (np.dtype("int64"), (), "img"),
    "license_ids": (np.dtype("uint8"), (), "img"),
    "file_names": ("str", (), "img"),
    "flickr_urls": ("str", (), "img"),
    "coco_urls": ("str", (), "img"),
    "transform_notes": ("str", (), "img"),
}


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _make_images(rng: np.random.Generator, n_images: int = 3) -> tuple[list[ShardImage], list[np.ndarray]]:
    images, masks = [], []
    for i in range(n_images):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 50))
        rgb = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        enc = prepare_image(_jpeg(rgb), source_id=f"t/img/{i}")
        instances = []
        for k in range(i + 1):  # 1, 2, 3 instances
            m = np.zeros((h, w), bool)
            y0, x0 = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 5))
            m[y0 : y0 + 5, x0 : x0 + int(rng.integers(1, 5))] = True
            if k == 0:
                m[0, 0] = True  # row/column 0 must count in the bbox
            masks.append(m)
            instances.append(
                ShardInstance(
                    mask_png=encode_mask_png(m),
                    bbox=mask_bbox(m),
                    moments=mask_moments(m),
                    category_id=k + 1,
                    area_px=int(m.sum()),
                    source_id=f"t/ann/{i}-{k}",
                    ignore_png=encode_mask_png(~m) if k == 1 else b"",
                )
            )
        images.append(
            ShardImage(
                image_id=100 + i,
                file_name=f"dir/{i}.jpg",
                jpeg=enc.data,
                encoding=enc.encoding,
                source_format=enc.source_format,
                width=w,
                height=h,
                source_id=f"t/img/{i}",
                license_id=i + 1,
                coco_url=f"http://x/{i}.jpg",
                instances=tuple(instances),
            )
        )
    return images, masks


@pytest.fixture
def shard(tmp_path):
    images, masks = _make_images(np.random.default_rng(0))
    path = tmp_path / "shard-00000.h5"
    digest = write_shard(path, images, dataset_name="test-ds", dataset_type="val", file_metadata={"coco_licenses": "[]"})
    return path, digest, images, masks


def test_reference_schema(shard):
    path, _, images, masks = shard
    n_img, n_inst = len(images), len(masks)
    with h5py.File(path, "r") as f:
        for name, (dtype, suffix, per) in REFERENCE_SCHEMA.items():
            d = f[name]
            assert d.shape == ((n_img if per == "img" else n_inst),) + suffix, name
            if dtype == "vlen_u8":
                assert h5py.check_vlen_dtype(d.dtype) == np.dtype("uint8"), name
            elif dtype == "str":
                assert h5py.check_string_dtype(d.dtype).encoding == "utf-8", name
            else:
                assert d.dtype == dtype, name
        assert dict(f["metadata"].attrs)["dataset_name"] == "test-ds"
        assert dict(f["metadata"].attrs)["type"] == "val"
        assert "coco_licenses" in f["metadata"].attrs
        np.testing.assert_array_equal(f["image_instance_indices"][:], [[0, 1], [1, 2], [3, 3]])
        np.testing.assert_array_equal(f["instance_masks_images"][:, 0], [0, 1, 1, 2, 2, 2])
        np.testing.assert_array_equal(f["sequence_indices"][:], [[0, 1], [1, 1], [2, 1]])


def test_round_trip(shard):
    path, digest, images, masks = shard
    assert sha256_file(path) == digest
    with ShardReader(path) as r:
        assert (r.num_images, r.num_instances, r.dataset_name) == (3, 6, "test-ds")
        assert r.has_masks
        for i, im in enumerate(images):
            assert r.image_bytes(i) == im.jpeg  # source JPEG bytes unchanged
            assert r.image(i).shape == (im.height, im.width, 3)
            assert r.image_size(i) == (im.height, im.width)
            assert r.image_id(i) == im.image_id and r.file_name(i) == im.file_name
            assert r.image_encoding(i) == "source-jpeg"
            for j in r.instances_of(i):
                assert r.image_of(j) == i
        for j, m in enumerate(masks):
            np.testing.assert_array_equal(r.mask(j), m)
            np.testing.assert_array_equal(r.moments(j), mask_moments(m))
            np.testing.assert_array_equal(r.bbox(j), mask_bbox(m))
        assert r.bbox(0)[0] == 0 and r.bbox(0)[1] == 0
        assert r.ignore_mask(0) is None
        np.testing.assert_array_equal(r.ignore_mask(2), ~masks[2])
        assert r.category_id(1) == 1 and r.source_id(1) == "t/ann/1-0"


def test_png_masks_are_0_255_single_channel():
    m = np.zeros((7, 9), bool)
    m[2:5, 3:8] = True
    png = encode_mask_png(m)
    img = Image.open(io.BytesIO(png))
    assert img.mode == "L" and img.size == (9, 7)
    arr = np.asarray(img)
    assert set(np.unique(arr)) == {0, 255}
    np.testing.assert_array_equal(decode_mask_png(png), m)
    # a crop plus origin encodes exactly like the full mask
    assert encode_mask_png(m[2:5, 3:8], origin=(2, 3), image_shape=(7, 9)) == png


def test_writes_are_byte_identical_and_atomic(tmp_path):
    images, _ = _make_images(np.random.default_rng(1))
    a = write_shard(tmp_path / "a.h5", images, dataset_name="d", dataset_type="t")
    time.sleep(1.1)  # object timestamps would differ by now
    b = write_shard(tmp_path / "b.h5", images, dataset_name="d", dataset_type="t")
    assert a == b
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]  # no temp files left


def test_failed_write_leaves_nothing(tmp_path):
    images, _ = _make_images(np.random.default_rng(2))
    with pytest.raises(ValueError, match="metadata attribute"):
        write_shard(tmp_path / "x.h5", images, dataset_name="d", dataset_type="t", file_metadata={"n": 3})
    assert list(tmp_path.iterdir()) == []


def test_empty_shard(tmp_path):
    path = tmp_path / "e.h5"
    write_shard(path, [], dataset_name="d", dataset_type="t")
    with ShardReader(path) as r:
        assert (r.num_images, r.num_instances, r.has_masks) == (0, 0, False)
    with h5py.File(path, "r") as f:
        assert f["positions"].shape == (0, 5) and f["instance_mask_bboxes"].shape == (0, 4)


def test_reader_pickles_before_and_after_use(shard):
    path, _, images, _ = shard
    r = ShardReader(path)
    r2 = pickle.loads(pickle.dumps(r))
    assert r.num_images == 3
    r3 = pickle.loads(pickle.dumps(r))  # an open reader pickles to a fresh closed one
    assert r2.image_bytes(1) == r3.image_bytes(1) == images[1].jpeg
    for x in (r, r2, r3):
        x.close()


def test_bad_license_rejected():
    with pytest.raises(ValueError, match="license_id 300"):
        ShardImage(image_id=1, file_name="a", jpeg=b"", encoding="x", width=1, height=1, license_id=300)


def test_mask_decoder_reads_own_and_foreign_pngs():
    """Our filter-0 PNGs take the direct inflate path; PNGs from other writers (filtered rows, RGB) go through Pillow."""
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 13), (40, 33)]:
        mask = rng.random(shape) > 0.5
        assert np.array_equal(decode_mask_png(encode_mask_png(mask)), mask)
        for mode, arr in [("L", mask * 255), ("RGB", np.repeat((mask * 255)[..., None], 3, axis=2))]:
            buf = io.BytesIO()
            Image.fromarray(arr.astype(np.uint8), mode=mode).save(buf, format="PNG", optimize=True)
            assert np.array_equal(decode_mask_png(buf.getvalue()), mask)


def test_jpeg_decode_matches_pillow_on_every_shared_jpeg():
    """``decode_rgb`` reads JPEGs with simplejpeg; its pixels must be Pillow's, byte for byte."""
    for path in _shared_jpegs():
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            expected = np.array(img.convert("RGB"))
        got = decode_rgb(data)
        assert got.flags.writeable and got.flags.c_contiguous and got.dtype == np.uint8
        assert np.array_equal(got, expected), path


def _shared_jpegs():
    from tests.conftest import SHARED_DATA

    files = sorted(p for p in SHARED_DATA.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        pytest.skip(f"no JPEGs under {SHARED_DATA} (../shared/data is absent)")
    return files


def test_region_decoding_is_built_where_libjpeg_turbo_headers_exist():
    """setup.py skips cython_ops._jpeg (with a warning) only when jpeglib.h/-ljpeg are missing; on a machine that has
    them (CI's), a missing extension is a build regression, not a fallback to accept silently."""
    import os

    if not os.path.exists("/usr/include/jpeglib.h"):
        pytest.skip("no /usr/include/jpeglib.h: cython_ops._jpeg is optional here")
    assert region_decoding_available()


def test_jpeg_region_decode_matches_whole_decode_on_every_shared_jpeg():
    """open_rgb(...).decode_region(box) returns pixels equal to decode_rgb's (Pillow's) for the box it covers."""
    if not region_decoding_available():
        pytest.skip("cython_ops._jpeg not built (no libjpeg-turbo headers at install time)")
    rng = np.random.default_rng(0)
    for path in _shared_jpegs():
        data = path.read_bytes()
        whole = decode_rgb(data)
        h, w = whole.shape[:2]
        boxes = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, w, h), (-5, -5, w + 9, h + 9)]
        for _ in range(3):
            (x0, x1), (y0, y1) = sorted(rng.integers(0, w, 2)), sorted(rng.integers(0, h, 2))
            boxes.append((int(x0), int(y0), int(x1) + 1, int(y1) + 1))
        for x0, y0, x1, y1 in boxes:
            source = open_rgb(np.frombuffer(data, np.uint8))
            assert (source.height, source.width) == (h, w) and source.region_decoding, path
            region, (ox, oy) = source.decode_region((x0, y0, x1, y1))
            assert region.dtype == np.uint8 and region.strides[1:] == (3, 1) and region.shape[2] == 3
            assert ox <= max(x0, 0) and oy == max(y0, 0) and oy + region.shape[0] == min(y1, h), (path, x0, y0, x1, y1)
            assert ox + region.shape[1] >= min(x1, w)
            assert np.array_equal(region, whole[oy:oy + region.shape[0], ox:ox + region.shape[1]]), (path, x0, y0)
            with pytest.raises(ValueError, match="once"):
                source.decode_region((x0, y0, x1, y1))


def test_open_rgb_other_images_and_corrupt_jpegs_decode_whole():
    """Greyscale JPEGs are region-decoded (as RGB); CMYK JPEGs and PNGs give the whole image (origin (0, 0)); a
    truncated JPEG gives decode_rgb's result or error, never different pixels."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    cases = [("L", "JPEG", {}, True), ("CMYK", "JPEG", {}, False), ("RGB", "PNG", {}, False)]
    cases += [("RGB", "JPEG", {"subsampling": s}, True) for s in (0, 1, 2)]  # 4:4:4, 4:2:2, 4:2:0
    for mode, fmt, options, region_ok in cases:
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, format=fmt, **options)
        data = buf.getvalue()
        whole = decode_rgb(data)
        for box in [(10, 12, 20, 30), (16, 0, 32, 40), (17, 3, 47, 39), (0, 5, 55, 6)]:
            source = open_rgb(data)
            assert (source.height, source.width) == (40, 56)
            assert source.region_decoding == (region_ok and region_decoding_available()), mode
            region, (ox, oy) = source.decode_region(box)
            assert np.array_equal(region, whole[oy:oy + region.shape[0], ox:ox + region.shape[1]]), (mode, options, box)
            assert ox <= box[0] and ox + region.shape[1] >= box[2] and oy <= box[1] and oy + region.shape[0] >= box[3]
            if not source.region_decoding:
                assert (ox, oy) == (0, 0) and region.shape == whole.shape
    if region_decoding_available():
        from cython_ops._jpeg import JpegRegionDecoder

        for bad in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe0garbage"):
            with pytest.raises(ValueError, match="JPEG header"):
                JpegRegionDecoder(bad)
    truncated = _jpeg(rgb)[:-200]
    try:
        expected = decode_rgb(truncated)
    except Exception as exc:  # Pillow refuses it: open_rgb/decode_region must refuse it the same way
        with pytest.raises(type(exc)):
            open_rgb(truncated).decode_region((0, 0, 56, 40))
    else:
        region, (ox, oy) = open_rgb(truncated).decode_region((0, 0, 56, 40))
        assert (ox, oy) == (0, 0) and np.array_equal(region, expected)


def test_decode_rgb_falls_back_to_pillow_for_cmyk_and_png():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for mode, fmt in [("CMYK", "JPEG"), ("RGB", "PNG"), ("L", "JPEG")]:
        img = Image.fromarray(rgb).convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        with Image.open(io.BytesIO(buf.getvalue())) as ref:
            expected = np.array(ref.convert("RGB"))
        assert np.array_equal(decode_rgb(buf.getvalue()), expected), (mode, fmt)


def test_reader_row_out_of_range_names_file_and_row(shard):
    reader = ShardReader(shard[0])
    with pytest.raises(IndexError, match=r"instance_masks: row 999999 out of range"):
        reader.mask(999999)


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    import struct

    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        out.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def test_mask_png_row_index_inflates_only_the_object_rows():
    """``rwIX`` names the first/end rows holding pixels and a raw-deflate segment between two full flushes that
    inflates to exactly those rows; Pillow and plain zlib read the file as an ordinary PNG."""
    import struct
    import zlib

    from flip_core.images import MASK_ROW_INDEX_CHUNK

    rng = np.random.default_rng(7)
    for shape in [(1, 1), (2, 3), (9, 4), (48, 64), (480, 640)]:
        for trial in range(6):
            mask = np.zeros(shape, bool)
            if trial:
                y0, x0 = rng.integers(shape[0]), rng.integers(shape[1])
                y1, x1 = rng.integers(y0, shape[0]) + 1, rng.integers(x0, shape[1]) + 1
                mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.6
            png = encode_mask_png(mask)
            np.testing.assert_array_equal(decode_mask_png(png), mask)
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))) > 128, mask)
            chunks = _png_chunks(png)
            rows = np.flatnonzero(mask.any(axis=1))
            if len(rows) == 0:
                assert [t for t, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
                continue
            assert [t for t, _ in chunks] == [b"IHDR", MASK_ROW_INDEX_CHUNK, b"IDAT", b"IEND"]
            version, first, end, start, stop = struct.unpack(">BIIII", chunks[1][1])
            assert (version, first, end) == (1, rows[0], rows[-1] + 1)
            idat = chunks[2][1]
            raw = zlib.decompress(idat)  # the whole stream stays a standard zlib stream
            assert len(raw) == shape[0] * (shape[1] + 1)
            segment = zlib.decompressobj(-15).decompress(idat[start:stop])
            assert segment == raw[first * (shape[1] + 1):end * (shape[1] + 1)]
            # the crop form gives the same bytes
            if trial:
                assert encode_mask_png(mask[y0:y1, x0:x1], origin=(y0, x0), image_shape=shape) == png


def test_mask_png_without_row_index_still_takes_the_fast_path():
    """Masks written before ``rwIX`` existed (signature, IHDR, one IDAT, IEND) decode through the full inflate."""
    import struct
    import zlib

    from flip_core.images import _decode_own_mask_png

    mask = np.zeros((30, 20), bool)
    mask[5:9, 3:15] = True
    chunks = [(t, p) for t, p in _png_chunks(encode_mask_png(mask)) if t != b"rwIX"]
    old = b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p)) for t, p in chunks)
    decoded = _decode_own_mask_png(old)
    assert decoded is not None and decoded.dtype == bool
    np.testing.assert_array_equal(decoded, mask)
    np.testing.assert_array_equal(decode_mask_png(old), mask)


def test_image_decode_from_row_array_matches_bytes(shard):
    path, _, images, _ = shard
    with ShardReader(path) as r:
        for i in range(r.num_images):
            np.testing.assert_array_equal(r.image(i), decode_rgb(r.image_bytes(i)))
            assert r.image_bytes(i) == images[i].jpeg
