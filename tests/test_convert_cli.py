"""``flip convert``: per-format help from the SPECS registry, a real run printing the summary, input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flip_core.cli import main
from tests.conftest import REPO_ROOT


def _flip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "flip_core.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_registered_formats(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "coco" in out and "lvis" in out


def test_format_help_documents_layout_and_options(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "coco", "--help"])
    out = capsys.readouterr().out
    for option in ("--images", "--annotations", "--keep-crowd", "--out", "--shard-size", "--num-workers",
                   "--ray-address", "--overwrite", "--max-pixels"):
        assert option in out
    assert "Expected layout" in out and "iscrowd" in out
    with pytest.raises(SystemExit):
        main(["convert", "lvis", "--help"])
    assert "coco_url" in capsys.readouterr().out


def test_malformed_json_exits_2_with_json_path(tmp_path, capsys):
    ann = tmp_path / "instances_x.json"
    ann.write_text('{"images": [], "annotations": [{"id": 1, "image_id": 2, "segmentation": 5}]}')
    code = main(["convert", "coco", "--images", str(tmp_path), "--annotations", str(ann), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "$.annotations[0].segmentation: expected list/dict" in err and str(ann) in err
    assert not (tmp_path / "o").exists()


def test_convert_coco_train_prints_summary(shared_data, tmp_path):
    images = shared_data("coco", "train2017")
    ann = shared_data("coco", "annotations", "instances_train2017.json")
    result = _flip("convert", "coco", "--images", str(images), "--annotations", str(ann), "--out", str(tmp_path),
                   "--shard-size", "2", "--num-workers", "2", "--no-progress", "--summary-json",
                   str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("images       5", "instances    53", "shards       3", "crowd", "images/s"):
        assert line in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rejects_by_reason"] == {"crowd": 2} and summary["images"] == 5
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    assert (tmp_path / "index.json").is_file() and (tmp_path / "manifest.parquet").is_file()
