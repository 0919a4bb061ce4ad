"""Every issue-8 source converted end to end with the real converter on a local Ray, then read back.

Real data where ../shared/data has it (GrabCut, Berkeley, DAVIS, COCO_MVal, Hypersim fragments, OpenImages CSV
rows), format-exact fixtures otherwise (tests.common.spec_fixtures, format sources cited there). Counts, ignore
masks and reject reasons in the shards are compared with what the spec itself yields.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
convert = pytest.importorskip("flip_core.convert")

from datasets_spec.berkeley import berkeley_spec  # noqa: E402
from datasets_spec.coco_mval import coco_mval_spec  # noqa: E402
from datasets_spec.davis import davis_spec  # noqa: E402
from datasets_spec.grabcut import grabcut_spec  # noqa: E402
from datasets_spec.hypersim import HypersimSpec  # noqa: E402
from datasets_spec.kitti360 import Kitti360Spec  # noqa: E402
from datasets_spec.openimages import OpenImagesSpec  # noqa: E402
from datasets_spec.sa1b import SA1BSpec  # noqa: E402
from datasets_spec.sbd import SBDSpec  # noqa: E402
from flip_core.manifest import open_dataset  # noqa: E402
from tests.common import spec_fixtures as fx  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def _openimages(tmp: Path):
    real = shared_path("openimages_v7", "train-annotations-object-segmentation.head.csv")
    shutil.copy(real, tmp / "train-annotations-object-segmentation.csv")
    with open(real, newline="") as f:
        rows = list(csv.DictReader(f))
    (tmp / "train" / "masks").mkdir(parents=True)
    for i, row in enumerate(rows):
        fx.rgb_jpeg(tmp / "train" / "images" / f"{row['ImageID']}.jpg", 48, 64, seed=i)
        m = np.zeros((24, 32), bool)
        m[4 + i: 12 + i, 3: 20] = True
        Image.fromarray(m).save(tmp / "train" / "masks" / row["MaskPath"])
    (tmp / "train" / "masks" / rows[0]["MaskPath"]).unlink()  # a CSV row referencing a missing file
    return OpenImagesSpec(root=tmp, split="train"), {"missing_file"}


def _hypersim(tmp: Path):
    fx.hypersim_real_frame(shared_path("hypersim", "examples", "01_marketplace_dataset", "scenes", "ai_001_001"), tmp)
    return HypersimSpec(root=tmp, min_pixels=16), None


def _kitti(tmp: Path):
    fx.kitti360_tree(tmp)
    return Kitti360Spec(root=tmp), {"ignored_class", "unknown_label", "no_instances", "size_mismatch"}


def _sbd(tmp: Path):
    seg = np.zeros((30, 40), np.uint8)
    seg[2:10, 2:10] = 1
    seg[12:20, 5:30] = 2
    seg[0] = 255
    fx.rgb_jpeg(tmp / "img" / "2008_000202.jpg", 30, 40)
    fx.sbd_mat(tmp / "inst" / "2008_000202.mat", seg, [15, 7])
    fx.rgb_jpeg(tmp / "img" / "2008_000203.jpg", 30, 40, seed=1)
    (tmp / "inst" / "2008_000203.mat").write_bytes(b"garbage")
    (tmp / "val.txt").write_text("2008_000202\n2008_000203\n")
    return SBDSpec(root=tmp), {"malformed_mat"}


def _sa1b(tmp: Path):
    members = {}
    for image_id, (h, w) in {1: (60, 90), 2: (64, 64)}.items():
        jpg, js, _ = fx.sa1b_members(image_id, h, w, n_masks=3)
        members[f"sa_{image_id}.jpg"], members[f"sa_{image_id}.json"] = jpg, js
    fx.write_tar(tmp / "sa_000000.tar", members)
    return SA1BSpec(root=tmp), None


SOURCES = {
    "grabcut": lambda tmp: (grabcut_spec(root=shared_path("GrabCut")), None),
    "berkeley": lambda tmp: (berkeley_spec(root=shared_path("Berkeley")), None),
    "davis": lambda tmp: (davis_spec(root=shared_path("DAVIS")), None),
    "coco_mval": lambda tmp: (coco_mval_spec(root=shared_path("COCO_MVal")), None),
    "openimages": _openimages,
    "hypersim": _hypersim,
    "kitti360": _kitti,
    "sbd": _sbd,
    "sa1b": _sa1b,
}
WITH_IGNORE = {"grabcut", "davis", "sbd"}


def _check_converted(spec, out: Path, expected_reasons):
    expected = fx.materialize(spec)
    want_masks = {m.source_id: m for m in fx.masks_of(expected)}
    ds = open_dataset(out)
    assert ds.verify() == []
    assert ds.manifest.num_rows == len(want_masks)
    assert sorted(ds.manifest.column("source_id").to_pylist()) == sorted(want_masks)
    seen_ignore = 0
    for k in range(len(ds.shards)):
        with ds.reader(k) as r:
            assert r.dataset_name == spec.name
            for j in range(r.num_instances):
                want = want_masks[r.source_id(j)]
                assert np.array_equal(r.mask(j), want.mask)
                ign = r.ignore_mask(j)
                assert (ign is None) == (want.ignore is None)
                if ign is not None:
                    assert np.array_equal(ign, want.ignore)
                    seen_ignore += 1
    reasons = set(ds.rejects.column("reason").to_pylist())
    if expected_reasons:
        assert expected_reasons <= reasons, reasons
    return seen_ignore


@pytest.fixture(scope="module")
def converted(tmp_path_factory, local_ray):
    """Every source converted once into ``<tmp>/converted/<source>/``; ``{source: (spec, reasons, out_dir)}``."""
    base = tmp_path_factory.mktemp("issue8")
    out = {}
    for source, build in sorted(SOURCES.items()):
        src = base / "src" / source
        src.mkdir(parents=True)
        spec, expected_reasons = build(src)
        target = base / "converted" / source
        summary = convert.convert_dataset(spec, target, shard_size=4, num_workers=2, progress=False)
        assert summary.images > 0 and summary.instances > 0, source
        out[source] = (spec, expected_reasons, target)
    return out


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_convert_and_read_back(source, converted):
    spec, expected_reasons, out = converted[source]
    seen_ignore = _check_converted(spec, out, expected_reasons)
    assert (seen_ignore > 0) == (source in WITH_IGNORE)


def test_training_pipeline_loads_every_source(converted):
    from flip_core.data.dataset import FlipTrainDataset
    from flip_core.data.index import build_image_index
    from flip_core.data.sampler import SampleKey
    from flip_core.train.config import DataConfig

    indexes = [build_image_index(open_dataset(out)) for _, _, out in converted.values()]
    data = DataConfig(manifests=tuple(str(out / "manifest.parquet") for _, _, out in converted.values()),
                      num_masks_per_image=2, min_tokens=8, mean_tokens=64, max_tokens=128, num_mask_points=256)
    dataset = FlipTrainDataset(indexes, data, patch_sizes=(1, 2, 4, 8, 16), seed=0)
    for d, index in enumerate(indexes):
        item = dataset[SampleKey(epoch=0, position=d, dataset=d, image=0)]
        assert item.prompts, (index.name, item.counts)


def test_evaluation_runs_on_every_source(converted, tmp_path):
    from flip_core.eval import EvalConfig, evaluate

    result = evaluate(EvalConfig(checkpoints=(), data=(str(next(iter(converted.values()))[2].parent),),
                                 out_dir=str(tmp_path / "eval"), num_workers=0, max_clicks=2, max_instances=3))
    report = (tmp_path / "eval" / "report" / "summary.csv").read_text()
    for spec, _, _ in converted.values():
        assert spec.name in report, spec.name
    assert result.tasks_planned >= len(converted)


def test_sa1b_buckets_convert_one_dataset_each(tmp_path, local_ray):
    (tmp_path / "src").mkdir()
    spec, _ = _sa1b(tmp_path / "src")
    buckets = SA1BSpec(root=spec.root, bucketing=True).buckets()
    assert list(buckets) == ["352x352", "352x544"]
    for key, sub in buckets.items():
        convert.convert_dataset(sub, tmp_path / "out" / key, shard_size=4, num_workers=2, progress=False)
        ds = open_dataset(tmp_path / "out" / key)
        assert ds.name == f"sa1b-{key}" and ds.manifest.num_rows == 3
        h, w = (int(x) for x in key.split("x"))
        with ds.reader(0) as r:
            assert r.image_size(0) == (h, w) and r.mask(0).shape == (h, w)


def test_flip_convert_cli(tmp_path, local_ray, capsys):
    from flip_core.cli import main

    with pytest.raises(SystemExit):
        main(["convert", "grabcut", "--help"])
    assert "boundary_GT" in capsys.readouterr().out
    root = shared_path("GrabCut")
    assert main(["convert", "grabcut", "--root", str(root), "--out", str(tmp_path / "g"), "--no-progress"]) == 0
    assert open_dataset(tmp_path / "g").manifest.num_rows == 15
    (tmp_path / "sa").mkdir()
    _sa1b(tmp_path / "sa")
    # --bucketing converts one dataset per resolution bucket into OUT/<H>x<W>/.
    assert main(["convert", "sa1b", "--root", str(tmp_path / "sa"), "--out", str(tmp_path / "b"), "--bucketing",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["352x352", "352x544"]
    assert open_dataset(tmp_path / "b" / "352x544").name == "sa1b-352x544"
    assert main(["convert", "sa1b", "--root", str(tmp_path / "sa"), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
