"""GrabCut / Berkeley / DAVIS / COCO_MVal specs on the real samples in ../shared/data (SOURCES.md sections 3-6).

Counts and ignore handling are checked against the source files decoded independently here.
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from datasets_spec.base import Reject, SpecError
from datasets_spec.berkeley import berkeley_spec
from datasets_spec.coco_mval import coco_mval_spec
from datasets_spec.davis import davis_spec
from datasets_spec.grabcut import grabcut_spec
from tests.common.spec_fixtures import masks_of, materialize, rejects_of


def _by_file(result):
    return {s.file_name.split("/")[-1]: (s, rgb, items) for s, rgb, items in result.values()}


def test_grabcut_real_band_is_ignore_and_extensions(shared_data):
    root = shared_data("GrabCut")
    spec = pickle.loads(pickle.dumps(grabcut_spec(root=root)))
    result = materialize(spec)
    assert len(result) == 15 and len(masks_of(result)) == 15 and not rejects_of(result)
    assert spec.enumeration_rejects() == []
    files = _by_file(result)
    assert {"music.JPG", "stone1.JPG", "llama.bmp", "fullmoon.bmp", "banana1.bmp"} <= set(files)
    assert [s.key for s, _, _ in sorted(result.values(), key=lambda t: t[0].key)] == list(range(15))
    for name, (sample, rgb, (inst,)) in files.items():
        gt = np.asarray(Image.open(root / "boundary_GT" / f"{name.rsplit('.', 1)[0]}.bmp"))
        assert np.array_equal(inst.mask, gt == 255), name
        band = gt == 128
        if band.any():
            assert np.array_equal(inst.ignore, band), name
        else:
            assert inst.ignore is None, name
    # SOURCES.md names 106024, 181079 and llama as band-free; the files show teddy.bmp has no 128 band either.
    no_band = ["106024.jpg", "181079.jpg", "llama.bmp", "teddy.jpg"]
    assert sorted(n for n, (_, _, (m,)) in files.items() if m.ignore is None) == no_band


def test_berkeley_real_stray_pixels_and_extra_masks(shared_data):
    root = shared_data("Berkeley")
    result = materialize(berkeley_spec(root=root))
    files = _by_file(result)
    assert len(files) == 14 and len(masks_of(result)) == 16
    sample, _, items = files["189011.jpg"]
    assert [i.source_id for i in items] == ["berkeley/mask/189011.png", "berkeley/mask/189011a.png",
                                            "berkeley/mask/189011b.png"]
    # 8023: grey stray pixels 197/243 count as object (> 128).
    rgb8023 = np.asarray(Image.open(root / "masks" / "8023.png"))
    (m8023,) = files["8023.jpg"][2]
    assert np.array_equal(m8023.mask, rgb8023[..., 0] > 128)
    assert m8023.mask[np.isin(rgb8023[..., 0], (197, 243))].all()
    # 101087: three magenta (255, 0, 255) pixels; RITM reads cv2 channel 0 = blue = 255 -> object.
    rgb101087 = np.asarray(Image.open(root / "masks" / "101087.png"))
    magenta = (rgb101087 == (255, 0, 255)).all(axis=2)
    assert magenta.sum() == 3
    (m101087,) = files["101087.jpg"][2]
    assert m101087.mask[magenta].all() and m101087.ignore is None
    assert m101087.mask.sum() == int((rgb101087[..., 2] > 128).sum())


def test_davis_real_palette_indices_and_void(shared_data):
    root = shared_data("DAVIS")
    result = materialize(davis_spec(root=root))
    files = _by_file(result)
    assert len(files) == 16
    expected_instances = 0
    for name, (sample, rgb, items) in files.items():
        idx = np.asarray(Image.open(root / "gt" / name.replace(".jpg", ".png")))
        objects = [v for v in np.unique(idx) if v not in (0, 255)]
        expected_instances += len(objects)
        assert [m.metadata["object_index"] for m in items] == objects
        for m, v in zip(items, objects):
            assert np.array_equal(m.mask, idx == v)
            assert (m.ignore is None) == (not (idx == 255).any())
    assert len(masks_of(result)) == expected_instances == 39
    # 195 has the void index 255: every instance carries it as ignore, never as object.
    sample, _, items = files["195.jpg"]
    idx = np.asarray(Image.open(root / "gt" / "195.png"))
    for m in items:
        assert np.array_equal(m.ignore, idx == 255) and not (m.mask & m.ignore).any()
    # 008/011 use index 2 only.
    assert [m.metadata["object_index"] for m in files["008.jpg"][2]] == [2]


def test_davis_merge_objects_is_ritm_union(shared_data):
    root = shared_data("DAVIS")
    result = materialize(davis_spec(root=root, merge_objects=True))
    assert len(masks_of(result)) == 16
    (m,) = _by_file(result)["195.jpg"][2]
    idx = np.asarray(Image.open(root / "gt" / "195.png"))
    assert np.array_equal(m.mask, np.isin(idx, (1, 2))) and np.array_equal(m.ignore, idx == 255)


def test_coco_mval_real_gray_and_spaces(shared_data):
    root = shared_data("COCO_MVal")
    result = materialize(coco_mval_spec(root=root))
    files = _by_file(result)
    assert len(files) == 16 and len(masks_of(result)) == 16
    spaced = {"baseball bat00_000000057232.jpg", "hair drier02_000000239041.jpg", "wine glass04_000000047112.jpg"}
    assert spaced <= set(files)
    _, rgb, (m,) = files["skateboard02_000000431848.jpg"]
    assert rgb.ndim == 3 and rgb.shape[2] == 3  # grayscale JPEG decodes to RGB
    for name, (_, _, (m,)) in files.items():
        gt = np.asarray(Image.open(root / "gt" / name.replace(".jpg", ".png")))
        assert np.array_equal(m.mask, gt > 0) and m.ignore is None
    assert files["book06_000000205514.jpg"][2][0].mask.sum() == 30  # the tiny object survives


def _copy(src, dst, names):
    dst.mkdir(parents=True)
    for n in names:
        shutil.copy(src / n, dst / n)


def test_bad_input_is_rejected_with_reason(shared_data, tmp_path):
    src = shared_data("GrabCut")
    _copy(src / "data_GT", tmp_path / "data_GT", ["106024.jpg", "24077.jpg", "teddy.jpg"])
    _copy(src / "boundary_GT", tmp_path / "boundary_GT", ["106024.bmp", "24077.bmp"])
    # A mask of the wrong size for its image, and an orphan mask.
    Image.open(src / "boundary_GT" / "sheep.bmp").save(tmp_path / "boundary_GT" / "teddy.bmp")
    Image.new("L", (8, 8)).save(tmp_path / "boundary_GT" / "orphan.bmp")
    (tmp_path / "data_GT" / "lonely.jpg").write_bytes((src / "data_GT" / "sheep.jpg").read_bytes())
    spec = grabcut_spec(root=tmp_path)
    result = materialize(spec)
    reasons = {r.source_id: r.reason for r in spec.enumeration_rejects()}
    assert reasons == {"grabcut/mask/orphan.bmp": "missing_image", "grabcut/img/lonely.jpg": "missing_mask"}
    bad = rejects_of(result)
    assert [(r.source_id, r.reason) for r in bad] == [("grabcut/mask/teddy.bmp", "size_mismatch")]
    assert "teddy.bmp" in bad[0].message
    assert len(masks_of(result)) == 2


def test_davis_unreadable_mask_is_an_enumeration_reject(shared_data, tmp_path):
    src = shared_data("DAVIS")
    _copy(src / "img", tmp_path / "img", ["000.jpg", "001.jpg"])
    _copy(src / "gt", tmp_path / "gt", ["000.png"])
    (tmp_path / "gt" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    spec = davis_spec(root=tmp_path)
    assert [s.source_id for s in spec.samples()] == ["davis/img/000.jpg"]
    rej, image = spec.enumeration_rejects()
    assert isinstance(rej, Reject) and rej.reason == "unreadable" and "001.png" in rej.message
    assert (image.source_id, image.reason) == ("davis/img/001.jpg", "no_instances")


def test_missing_folder_is_spec_error(tmp_path):
    with pytest.raises(SpecError, match="data_GT"):
        list(grabcut_spec(root=tmp_path).samples())
    with pytest.raises(ValueError, match="mask_rule"):
        from datasets_spec._interactive import PairedFolderSpec

        PairedFolderSpec(name="x", root=tmp_path, images_dir="a", masks_dir="b", mask_rule="nope")


def test_band128_palette_mask_is_looked_up_like_opencv(tmp_path):
    """A palette mask under the band128 rule goes through its palette first (cv2.imread returns BGR colours)."""
    (tmp_path / "data_GT").mkdir()
    (tmp_path / "boundary_GT").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "data_GT" / "a.png")
    idx = np.zeros((6, 8), np.uint8)
    idx[1:3, 1:3] = 1  # palette colour (0, 0, 255): blue 255 -> object
    idx[4, :] = 2  # palette colour (128, 128, 128): the band
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([0, 0, 0, 0, 0, 255, 128, 128, 128] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "boundary_GT" / "a.png")
    ((_, _, (m,)),) = materialize(grabcut_spec(root=tmp_path)).values()
    assert np.array_equal(m.mask, idx == 1) and np.array_equal(m.ignore, idx == 2)
