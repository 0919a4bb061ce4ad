"""Open Images V7 spec: the real CSV rows in ../shared/data/openimages_v7 plus format-exact mask PNGs.

The real CSV (SOURCES.md section 9) has the official columns but no masks or images; the fixture adds them:
images ``{split}/images/{ImageID}.jpg`` and 1-bit mask PNGs named by ``MaskPath``, smaller than the image (Open
Images V7 download page, "Segmentations": masks are binary PNGs in ``{split}-masks-{c}.zip``, c = first character
of MaskPath), both extracted and inside a zip.
"""

from __future__ import annotations

import csv
import pickle
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from datasets_spec.base import RecordError, SpecError
from datasets_spec.openimages import OpenImagesSpec
from tests.common.spec_fixtures import masks_of, materialize, rejects_of, rgb_jpeg


def _rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _mask_png(path, box, size=(40, 30)):
    m = np.zeros((size[1], size[0]), bool)
    x0, x1, y0, y1 = box
    m[int(y0 * size[1]):int(y1 * size[1]), int(x0 * size[0]):int(x1 * size[0])] = True
    Image.fromarray(m).save(path)  # mode "1" PNG
    return m


@pytest.fixture
def oi_tree(shared_data, tmp_path):
    real = shared_data("openimages_v7", "train-annotations-object-segmentation.head.csv")
    shutil.copy(real, tmp_path / "train-annotations-object-segmentation.csv")
    rows = _rows(real)
    masks_dir = tmp_path / "train" / "masks"
    masks_dir.mkdir(parents=True)
    small = {}
    for i, row in enumerate(rows):
        rgb_jpeg(tmp_path / "train" / "images" / f"{row['ImageID']}.jpg", 60, 80, seed=i)
        box = tuple(float(row[k]) for k in ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"))
        small[row["MaskPath"]] = _mask_png(masks_dir / row["MaskPath"], box)
    # Put the mask of row 3 into its per-prefix zip instead of the folder.
    name = rows[2]["MaskPath"]
    with zipfile.ZipFile(masks_dir / f"train-masks-{name[0]}.zip", "w") as zf:
        zf.write(masks_dir / name, arcname=name)
    (masks_dir / name).unlink()
    classes = tmp_path / "oidv7-class-descriptions.csv"
    classes.write_text("LabelName,DisplayName\n/m/011k07,Tortoise\n/m/04yx4,Man\n/m/09j2d,Clothing\n")
    return tmp_path, rows, small, classes


def test_real_rows_masks_resized_and_categories(oi_tree):
    root, rows, small, classes = oi_tree
    spec = pickle.loads(pickle.dumps(OpenImagesSpec(root=root, split="train", class_descriptions=classes)))
    result = materialize(spec)
    assert len(result) == 4 and len(masks_of(result)) == 4 and not rejects_of(result)
    assert spec.enumeration_rejects() == []
    for sample, rgb, (m,) in result.values():
        row = next(r for r in rows if r["ImageID"] == sample.metadata["image_id"])
        assert sample.key == int(row["ImageID"], 16) & ((1 << 63) - 1)
        assert m.category_id == {"/m/04yx4": 1, "/m/09j2d": 2}[row["LabelName"]]
        assert m.metadata["DisplayName"] in ("Man", "Clothing") and m.metadata["Clicks"] == row["Clicks"]
        # nearest-neighbour upscaling of the 40x30 mask to the 80x60 image: each source pixel becomes 2x2.
        assert m.mask.shape == (60, 80)
        assert np.array_equal(m.mask, np.kron(small[row["MaskPath"]], np.ones((2, 2), bool)))


def test_bad_rows_and_missing_files(oi_tree):
    root, rows, _, classes = oi_tree
    csv_path = root / "train-annotations-object-segmentation.csv"
    text = csv_path.read_text()
    first = rows[0]
    text += f"missing_mask.png,{first['ImageID']},/m/04yx4,x,0,1,0,1,0.5,\n"
    text += f"zzz.png,{first['ImageID']},/m/0unknown,x,0,1,0,1,0.5,\n"
    text += "nomask.png,00000000000000ff,/m/04yx4,x,0,1,0,1,0.5,\n"  # image file missing too
    text += ",0123,/m/04yx4,x,0,1,0,1,0.5,\n"
    csv_path.write_text(text)
    spec = OpenImagesSpec(root=root, split="train", class_descriptions=classes)
    rej = {r.source_id: r.reason for r in spec.enumeration_rejects()}
    assert rej == {"openimages/mask/zzz.png": "unknown_label", "openimages/mask/line9": "malformed_row"}
    samples = {s.metadata["image_id"]: s for s in spec.samples()}
    items = spec.load_masks(samples[first["ImageID"]], 60, 80)
    assert [type(i).__name__ for i in items] == ["InstanceMask", "Reject"]
    assert items[1].reason == "missing_file" and "missing_mask.png" in items[1].message
    with pytest.raises(RecordError, match="does not exist") as exc:
        spec.load_image(samples["00000000000000ff"])
    assert exc.value.reason == "missing_file"
    # a mask whose aspect ratio does not match its image: size_mismatch, naming the mask.
    wrong = OpenImagesSpec(root=root, split="train", class_descriptions=classes)
    items = wrong.load_masks(samples[first["ImageID"]], 60, 200)
    assert items[0].reason == "size_mismatch" and first["MaskPath"] in items[0].message
    # without class descriptions nothing is unknown; categories are -1.
    no_cls = OpenImagesSpec(root=root, split="train")
    assert {s.category_id for smp in no_cls.samples() for s in smp.instances} == {-1}


def test_custom_folders(oi_tree):
    root, rows, _, classes = oi_tree
    (root / "train" / "images").rename(root / "imgs")
    (root / "train" / "masks").rename(root / "train-m")
    spec = OpenImagesSpec(root=root, split="train", images_dir="imgs", masks_dir="{split}-m")
    assert len(masks_of(materialize(spec))) == 4


def test_missing_csv_is_spec_error(tmp_path):
    with pytest.raises(SpecError, match="annotations-object-segmentation"):
        list(OpenImagesSpec(root=tmp_path, split="validation").samples())
