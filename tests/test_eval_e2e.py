"""End to end: ``flip convert`` the real sample benchmarks, then ``flip evaluate`` a random FLIP-tiny checkpoint
beside the ellipse baseline on local Ray (real components, no mocks). Instance counts are kept tiny."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("flip_core.manifest", reason="flip_core.manifest has not landed yet")
pytest.importorskip("flip_core.convert.run", reason="flip_core.convert has not landed yet")

from flip_core.cli import main  # noqa: E402
from flip_core.eval.report import SUMMARY_COLUMNS  # noqa: E402

BENCHMARKS = {
    # name: (format, arguments relative to ../shared/data)
    "coco": ("coco", ["--images", ("coco", "val2017"), "--annotations", ("coco", "annotations",
                                                                         "instances_val2017.json")]),
    "lvis": ("lvis", ["--images", ("lvis",), "--annotations", ("lvis", "lvis_val_100.present_subset.json")]),
    "grabcut": ("grabcut", ["--root", ("GrabCut",)]),
    "berkeley": ("berkeley", ["--root", ("Berkeley",)]),
    "davis": ("davis", ["--root", ("DAVIS",)]),
    "coco_mval": ("coco_mval", ["--root", ("COCO_MVal",)]),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, local_ray):
    from tests.conftest import shared_path

    root = tmp_path_factory.mktemp("converted")
    for name, (fmt, args) in BENCHMARKS.items():
        argv = ["convert", fmt]
        for a in args:
            argv.append(str(shared_path(*a)) if isinstance(a, tuple) else a)
        argv += ["--name", name, "--out", str(root / name), "--no-progress", "--num-workers", "2"]
        assert main(argv) == 0, f"conversion of {name} failed"
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from flip_core.model import build_flip_model, save_flip_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "flip-tiny-random.ckpt"
    save_flip_checkpoint(build_flip_model("tiny"), path)
    return path


@pytest.mark.slow
def test_flip_evaluate_all_benchmarks(converted, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(converted), "--out", str(out),
            "--protocol", "flip,clicks", "--mode", "box", "--max-instances", "1", "--max-clicks", "2",
            "--refine-iters", "0", "--num-tokens", "128", "--num-workers", "2", "--calibration-instances", "20"]
    assert main(argv) == 0
    with open(out / "report" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == SUMMARY_COLUMNS
    methods = {r["method"] for r in rows}
    assert "ellipse" in methods and any(m.startswith("flip-tiny-random-") for m in methods)
    datasets = {r["dataset"] for r in rows} - {"(macro mean)"}
    assert datasets == set(BENCHMARKS)
    for r in rows:
        assert r["instances"] == ("6" if r["dataset"] == "(macro mean)" else "1")
        assert r["mean_iou"] != "" and r["noc85"] != ""
    for name in ("summary.md", "iou_by_size.png", "miou_vs_clicks.png"):
        assert (out / "report" / name).stat().st_size > 0
    # the rerun is a no-op: every task is already complete (6 datasets x 2 methods, 1 shard each)
    capsys.readouterr()
    assert main(argv) == 0
    assert "12 tasks planned, 0 run, 12 already done" in capsys.readouterr().out
