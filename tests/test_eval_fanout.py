"""Fan-out: determinism, resume/skip logic, settings changes, bad input, report files (baseline on synthetic shards)."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("flip_core.manifest", reason="flip_core.manifest (open_dataset) has not landed yet")

from flip_core.eval import EvalConfig, evaluate  # noqa: E402
from flip_core.eval.report import SUMMARY_COLUMNS  # noqa: E402
from tests.eval_support import build_dataset  # noqa: E402

TIMING = {"total_ms", "preprocess_ms", "model_ms", "postprocess_ms"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    build_dataset(root, "synth_a", shards=2, ignore_band=True, seed=0)
    build_dataset(root, "synth_b", shards=2, ignore_band=False, seed=1)  # no ignore regions
    return root


def _config(datasets, out, **kw):
    base = dict(checkpoints=(), data=(str(datasets),), out_dir=str(out), num_workers=0, max_clicks=4)
    base.update(kw)
    return EvalConfig(**base)


def _results(out: Path) -> dict[str, list[dict]]:
    got = {}
    for p in sorted((out / "results").rglob("*.parquet")):
        rows = pq.read_table(p).to_pylist()
        got[str(p.relative_to(out))] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    return got


def test_rerun_is_identical_and_report_has_documented_columns(datasets, tmp_path):
    a = evaluate(_config(datasets, tmp_path / "a"))
    b = evaluate(_config(datasets, tmp_path / "b"))
    assert a.tasks_planned == 4 and len(a.tasks_run) == 4
    ra, rb = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert len(ra) == 8 and ra == rb
    report = tmp_path / "a" / "report"
    for name in ("summary.csv", "summary.md", "iou_by_size.png", "miou_vs_clicks.png"):
        assert (report / name).stat().st_size > 0
    with open(report / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == SUMMARY_COLUMNS
    assert {r["dataset"] for r in rows} == {"synth_a", "synth_b", "(macro mean)"}
    assert all(float(r["mean_iou"]) > 0.5 for r in rows)
    assert a.baseline_radii.keys() == {"synth_a", "synth_b"}


def test_resume_recomputes_only_missing_and_stale(datasets, tmp_path):
    out = tmp_path / "out"
    evaluate(_config(datasets, out))
    files = sorted((out / "results").rglob("*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    victim = out / "results" / "ellipse" / "synth_b" / "shard-00001" / "flip__ellipse.parquet"
    victim.unlink()
    (victim.parent / ".clicks__ellipse.parquet.tmp-999-deadbeef").write_bytes(b"half")  # killed writer's leftover
    again = evaluate(_config(datasets, out))
    assert [(t.method, t.dataset, t.shard) for t in again.tasks_run] == [("ellipse", "synth_b", "shard-00001.h5")]
    assert again.tasks_run[0].files == (str(victim),)
    assert len(again.tasks_skipped) == 3
    assert not list((out / "results").rglob(".*tmp-*"))
    for p, t in mtimes.items():
        if p != victim:
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    # a click-protocol setting changes: only the click files are recomputed, the FLIP-protocol files are kept
    changed = evaluate(_config(datasets, out, max_clicks=3))
    assert len(changed.tasks_run) == 4
    for t in changed.tasks_run:
        assert all(f.endswith("clicks__ellipse.parquet") for f in t.files)
    rows = pq.read_table(out / "results/ellipse/synth_a/shard-00000/clicks__ellipse.parquet").to_pylist()
    assert all(len(r["ious"]) == 3 for r in rows)


def test_max_instances_is_a_seeded_subset(datasets, tmp_path):
    r = evaluate(_config(datasets, tmp_path / "o", max_instances=3, protocols=("flip",)))
    n = {row["dataset"]: row["instances"] for row in r.summary}
    assert n["synth_a"] == 3 and n["synth_b"] == 3


def test_bad_inputs_have_clear_errors(datasets, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        evaluate(_config(datasets, tmp_path / "o", checkpoints=(str(tmp_path / "missing.ckpt"),)))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="does not load"):
        evaluate(_config(datasets, tmp_path / "o", checkpoints=(str(junk),)))
    with pytest.raises(ValueError, match="neither a converted dataset"):
        evaluate(_config(tmp_path, tmp_path / "o"))
    with pytest.raises(ValueError, match="unknown mode"):
        _config(datasets, tmp_path / "o", modes=("fast",))
    empty = build_dataset(tmp_path / "empty", "empty", shards=1, ignore_band=True)
    table = pq.read_table(empty / "manifest.parquet")
    pq.write_table(table.slice(0, 0), empty / "manifest.parquet")
    with pytest.raises(ValueError, match="has no instances"):
        evaluate(_config(empty, tmp_path / "o"))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        _config(datasets, tmp_path / "o", baseline=False)


def test_ray_fanout_matches_in_process(datasets, tmp_path):
    serial = evaluate(_config(datasets, tmp_path / "serial", protocols=("flip",)))
    ray_run = evaluate(_config(datasets, tmp_path / "ray", protocols=("flip",), num_workers=2))
    assert len(ray_run.tasks_run) == serial.tasks_planned == 4
    assert _results(tmp_path / "serial") == _results(tmp_path / "ray")


def test_config_is_picklable_and_frozen(datasets, tmp_path):
    import pickle

    cfg = _config(datasets, tmp_path)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert os.fspath(cfg.out_path) == str(tmp_path)


def test_cli_help_and_errors(datasets, tmp_path, capsys):
    from flip_core.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "--max-instances" in capsys.readouterr().out
    assert main(["evaluate", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(datasets), "--out", str(tmp_path / "o"), "--mode", "fast"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    rc = main(["evaluate", "--data", str(datasets), "--out", str(tmp_path / "o"), "--num-workers", "0",
               "--protocol", "flip", "--max-instances", "2"])
    assert rc == 0 and "0 already done" in capsys.readouterr().out
