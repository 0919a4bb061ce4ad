"""End-to-end conversion on a local Ray (one module-scoped instance): real COCO/LVIS samples, exactness against
pycocotools and an independent float64 moment computation, source JPEG bytes, reruns, repairs and bad input."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from datasets_spec.base import SpecError
from datasets_spec.coco import CocoSpec
from datasets_spec.lvis import LvisSpec
from flip_core.convert import convert_dataset
from flip_core.manifest import open_dataset
from tests.test_convert_inputs import BAD_IMAGES, EXPECTED_REJECTS, make_bad_dataset
from tests.test_gaussian import _reference_moments

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _coco(shared_data, split: str, **kw) -> CocoSpec:
    return CocoSpec(images=shared_data("coco", split),
                    annotations=shared_data("coco", "annotations", f"instances_{split}.json"), **kw)


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def val_out(local_ray, shared_data_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco_val")
    summary = convert_dataset(_coco(shared_data_module, "val2017"), out, shard_size=5, num_workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def shared_data_module():
    from tests.conftest import shared_path

    return shared_path


def _check_against_annotations(out: Path, ann_path: Path, images_dir: Path) -> int:
    """Masks == pycocotools, positions == float64 moments (1e-6), bbox exact, JPEG bytes == source; returns count."""
    data = json.loads(ann_path.read_text())
    anns = {a["id"]: a for a in data["annotations"]}
    ds = open_dataset(out)
    assert ds.verify() == []
    checked = 0
    for k in range(len(ds.shards)):
        with ds.reader(k) as r:
            for i in range(r.num_images):
                h, w = r.image_size(i)
                assert r.image_bytes(i) == (images_dir / r.file_name(i)).read_bytes()
                assert r.image_encoding(i) == "source-jpeg"
                for j in r.instances_of(i):
                    seg = anns[int(r.source_id(j).split("/")[-1])]["segmentation"]
                    rle = mask_utils.frPyObjects(seg, h, w)
                    expected = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle).astype(bool)
                    mask = r.mask(j)
                    np.testing.assert_array_equal(mask, expected)
                    np.testing.assert_allclose(r.moments(j), _reference_moments(expected), rtol=0, atol=1e-6)
                    ys, xs = np.nonzero(expected)
                    np.testing.assert_array_equal(r.bbox(j), [xs.min(), ys.min(), xs.max(), ys.max()])
                    checked += 1
    return checked


def test_val2017_exact(val_out, shared_data):
    out, summary = val_out
    assert (summary.images, summary.instances, summary.shards) == (19, 290, 4)
    assert summary.rejects_by_reason == {"crowd": 6}
    ann = shared_data("coco", "annotations", "instances_val2017.json")
    assert _check_against_annotations(out, ann, shared_data("coco", "val2017")) == 290


def test_val2017_tables_and_index(val_out):
    out, _ = val_out
    ds = open_dataset(out / "manifest.parquet")
    index = ds.index
    assert index["num_images"] == 19 and index["num_instances"] == 290 and len(index["shards"]) == 4
    assert [s["file"] for s in index["shards"]] == [f"shard-0000{k}.h5" for k in range(4)]
    keys = [s["first_key"] for s in index["shards"]]
    assert keys == sorted(keys)
    table = ds.manifest
    assert table.num_rows == 290
    first = table.slice(0, 1).to_pylist()[0]
    with ds.reader(0) as r:
        assert first["shard"] == "shard-00000.h5" and first["instance_row"] == 0
        assert first["image_id"] == r.image_id(0) == min(s["first_key"] for s in index["shards"])
        assert (first["height"], first["width"]) == r.image_size(0)
        np.testing.assert_array_equal(
            [first[c] for c in ("mu_x", "mu_y", "var_x", "var_y", "cov_xy")], r.moments(0))
        assert first["area_px"] == r.mask(0).sum()
        with h5py.File(r.path, "r") as f:
            assert f["metadata"].attrs["dataset_name"] == "coco-val2017" and f["metadata"].attrs["type"] == "val2017"
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert len(rejects) == 6 and all(r["reason"] == "crowd" and r["shard"].startswith("shard-") for r in rejects)


def test_rerun_is_a_no_op(val_out, shared_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(val_out[0], out)
    before = snapshot(out)
    summary = convert_dataset(_coco(shared_data, "val2017"), out, shard_size=5, num_workers=2, progress=False)
    assert summary.skipped_shards == summary.shards == 4
    assert snapshot(out) == before


def test_corrupt_and_missing_shards_are_redone(val_out, shared_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(val_out[0], out)
    before = snapshot(out)
    data = bytearray((out / "shard-00001.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "shard-00001.h5").write_bytes(bytes(data))
    (out / "shard-00003.h5").unlink()
    problems = open_dataset(out).verify()
    assert len(problems) == 2 and "shard-00001.h5" in problems[0] and "missing" in problems[1]
    summary = convert_dataset(_coco(shared_data, "val2017"), out, shard_size=5, num_workers=2, progress=False)
    assert summary.skipped_shards == 2
    assert snapshot(out) == before


def test_other_shard_size_replans_and_overwrite(val_out, shared_data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(val_out[0], out)
    summary = convert_dataset(_coco(shared_data, "val2017"), out, shard_size=10, num_workers=2, progress=False)
    assert summary.shards == 2 and summary.skipped_shards == 0
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.h5", "shard-00001.h5"]
    assert open_dataset(out).verify() == [] and open_dataset(out).manifest.num_rows == 290
    again = convert_dataset(_coco(shared_data, "val2017"), out, shard_size=10, num_workers=1, progress=False,
                            overwrite=True)
    assert again.skipped_shards == 0 and open_dataset(out).verify() == []


def test_train2017_and_keep_crowd(local_ray, shared_data, tmp_path):
    spec = _coco(shared_data, "train2017", keep_crowd=True)
    summary = convert_dataset(spec, tmp_path, shard_size=2, num_workers=2, progress=False)
    assert (summary.images, summary.instances, summary.shards) == (5, 55, 3)
    assert summary.rejects_by_reason == {}
    ann = shared_data("coco", "annotations", "instances_train2017.json")
    assert _check_against_annotations(tmp_path, ann, shared_data("coco", "train2017")) == 55


def test_bad_input_run_continues(local_ray, tmp_path):
    images_dir, ann = make_bad_dataset(tmp_path / "src")
    spec = CocoSpec(images=images_dir, annotations=ann, name="bad")
    summary = convert_dataset(spec, tmp_path / "out", shard_size=3, num_workers=2, progress=False)
    rows = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert {(r["source_id"], r["reason"]) for r in rows} == EXPECTED_REJECTS
    assert len(rows) == len(EXPECTED_REJECTS)
    assert all(r["message"].startswith(r["source_id"]) or r["source_id"] in r["message"] for r in rows)
    good = sorted(i for i, v in BAD_IMAGES.items() if v[3] is None)
    assert summary.images == len(good) and summary.instances == len(good)
    assert sorted(open_dataset(tmp_path / "out").manifest.column("image_id").to_pylist()) == good
    encodings = dict(zip(open_dataset(tmp_path / "out").manifest.column("image_id").to_pylist(),
                         open_dataset(tmp_path / "out").manifest.column("image_encoding").to_pylist()))
    assert encodings == {1: "source-jpeg", 7: "reencoded-jpeg", 8: "reencoded-jpeg", 11: "source-jpeg"}


def test_malformed_json_stops_before_any_shard(local_ray, tmp_path):
    ann = tmp_path / "instances_x.json"
    ann.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 3}], "annotations": []}')
    with pytest.raises(SpecError, match=r"\$\.images\[0\]\.height: missing required key"):
        convert_dataset(CocoSpec(images=tmp_path, annotations=ann), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_lvis_full_sample_reports_missing_files(local_ray, shared_data, tmp_path):
    root = shared_data("lvis")
    summary = convert_dataset(LvisSpec(images=root, annotations=root / "lvis_val_100.json"), tmp_path,
                              shard_size=25, num_workers=2, progress=False)
    assert summary.rejects_by_reason["missing_file"] == 77
    assert summary.images == 22 and summary.instances == 206
    ds = open_dataset(tmp_path)
    with ds.reader(0) as r:
        meta = json.loads(r.column("image_metadata")[0])
        assert "neg_category_ids" in meta and r.metadata["lvis_version"] == "v0.5"
    rows = ds.rejects.to_pylist()
    assert Counter(r["reason"] for r in rows)["missing_file"] == 77


def test_lvis_present_subset_exact(local_ray, shared_data, tmp_path):
    root = shared_data("lvis")
    ann = root / "lvis_val_100.present_subset.json"
    convert_dataset(LvisSpec(images=root, annotations=ann), tmp_path, shard_size=8, progress=False)
    assert _check_against_annotations(tmp_path, ann, root) == 206


def test_labelme_export(local_ray, shared_data, tmp_path):
    root = shared_data("labelme_coco", "data_dataset_coco")
    summary = convert_dataset(CocoSpec(images=root, annotations=root / "annotations.json", name="labelme"),
                              tmp_path, shard_size=2, progress=False)
    assert (summary.images, summary.instances, summary.rejects) == (3, 12, 0)
    assert _check_against_annotations(tmp_path, root / "annotations.json", root) == 12


def test_dataset_with_nothing_usable(local_ray, tmp_path):
    ann = tmp_path / "instances_none.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "../x.jpg", "width": 4, "height": 4}],
                               "annotations": []}))
    summary = convert_dataset(CocoSpec(images=tmp_path, annotations=ann), tmp_path / "out", progress=False)
    assert (summary.images, summary.shards, summary.rejects_by_reason) == (0, 0, {"path_escape": 1})
    ds = open_dataset(tmp_path / "out")
    assert ds.shards == [] and ds.manifest.num_rows == 0 and ds.verify() == []


def test_reference_loader_access_pattern(val_out):
    """Read a shard the way the reference ``HDF5_Dataset.get_data`` does: plain h5py, 1-D uint8 items decoded."""
    import io

    from PIL import Image

    out, _ = val_out
    with h5py.File(out / "shard-00000.h5", "r") as f:
        seq = f["sequence_indices"][:]
        inst_idx = f["image_instance_indices"][:]
        for seq_index in range(len(seq)):
            start, length = seq[seq_index]
            assert length == 1
            rgb = f["rgb_images"][start]
            assert rgb.dtype == np.uint8 and rgb.ndim == 1
            image = np.asarray(Image.open(io.BytesIO(rgb.tobytes())).convert("RGB"))
            first, count = inst_idx[start]
            for mask_index in range(first, first + count):
                raw = f["instance_masks"][mask_index]
                assert raw.dtype == np.uint8 and raw.ndim == 1
                mask = np.asarray(Image.open(io.BytesIO(raw.tobytes())))
                assert mask.ndim == 2 and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
                assert mask.shape == image.shape[:2]
                assert f["instance_masks_images"][mask_index, 0] == start
                pos = f["positions"][mask_index : mask_index + 1]
                assert pos.shape == (1, 5) and pos.dtype == np.float32 and pos[0, 2] > 0 and pos[0, 3] > 0
                box = f["instance_mask_bboxes"][mask_index]
                assert np.isfinite(box).all() and box[2] >= box[0] and box[3] >= box[1]
