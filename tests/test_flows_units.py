"""Fast checks of the flow plumbing: typed parameters, fail-fast Ray/Prefect checks, artifact Markdown, `flip run`
bad input. No Prefect server and no Ray cluster is started here (the end-to-end tests do that)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from flip_core.cli import main as flip_main
from flows.artifacts import conversion_markdown, curve_rows, evaluation_markdown, markdown_table, training_markdown
from flows.params import ConvertParams, DataSource, TrainParams, build_spec, spec_argv
from flows.runtime import PrefectUnavailableError, RayUnavailableError, check_ray_address, prefect_api


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


# ---- parameters ---------------------------------------------------------------------------------------------

def test_unknown_fields_and_formats_are_rejected(tmp_path):
    with pytest.raises(ValidationError, match="stepz"):
        TrainParams(stepz=3)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ConvertParams(shard=3)
    with pytest.raises(ValidationError, match="unknown dataset format 'cocoa'"):
        DataSource(format="cocoa", root=str(tmp_path))


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(ValidationError, match=r"images path '.*nope' does not exist"):
        DataSource(format="coco", images=str(tmp_path / "nope"), annotations=str(tmp_path))
    DataSource(format="procedural", root=str(tmp_path / "to-be-generated"))  # procedural root is written


def test_from_argv_round_trips_to_spec_options(tmp_path):
    source = DataSource.from_argv("coco", ["--images", str(tmp_path), "--annotations", str(tmp_path),
                                           "--keep-crowd", "--name", "val"])
    assert source.label == "val" and source.options == {"keep-crowd": True}
    assert spec_argv(source) == ["--images", str(tmp_path), "--annotations", str(tmp_path), "--keep-crowd"]
    with pytest.raises(ValueError, match="unexpected argument 'stray'"):
        DataSource.from_argv("coco", ["stray"])


def test_build_spec_uses_the_format_parser(tmp_path):
    spec = build_spec(DataSource(format="procedural", root=str(tmp_path), options={"num-images": 2}))
    assert spec.name == "procedural" and len(list(spec.samples())) == 2
    with pytest.raises(ValueError, match="required: --annotations"):
        build_spec(DataSource(format="coco", images=str(tmp_path)))


# ---- fail fast ----------------------------------------------------------------------------------------------

def test_unanswered_ray_address_fails_within_seconds():
    port = _closed_port()
    t0 = time.perf_counter()
    with pytest.raises(RayUnavailableError, match=f"127.0.0.1:{port}.*does not answer"):
        check_ray_address(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(RayUnavailableError, match="does not answer"):
        check_ray_address(f"ray://127.0.0.1:{port}", timeout_s=2)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(RayUnavailableError, match="ray job submit"):
        check_ray_address("http://127.0.0.1:8265")


def test_a_listener_that_is_not_ray_fails_within_the_timeout():
    with socket.socket() as listener:  # accepts TCP (backlog) but never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        t0 = time.perf_counter()
        with pytest.raises(RayUnavailableError, match="is not a Ray cluster's GCS"):
            check_ray_address(f"127.0.0.1:{port}", timeout_s=2)
        assert time.perf_counter() - t0 < 6


def test_prefect_server_down_falls_back_explicitly_or_fails(caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{_closed_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with pytest.raises(PrefectUnavailableError, match="does not answer"):
            with prefect_api(allow_ephemeral=False):
                pass
        with caplog.at_level("WARNING", logger="flows.runtime"):
            with prefect_api(allow_ephemeral=True) as api:
                assert api == "ephemeral" and not PREFECT_API_URL.value()
        assert "FALLING BACK to Prefect's ephemeral API" in caplog.text
        assert PREFECT_API_URL.value() == url  # restored after the block


# ---- artifacts ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Summary:  # the fields of flip_core.convert.ConversionSummary the artifact reads
    images: int = 3
    instances: int = 7
    rejects_by_reason: dict = field(default_factory=lambda: {"unreadable": 1, "crowd": 2})
    shards: int = 1
    skipped_shards: int = 0
    wall_s: float = 1.25


def test_conversion_markdown_lists_counts_and_reject_rows(tmp_path):
    rows = [{"source_id": "coco/img/7", "stage": "image", "reason": "unreadable", "message": "bad | jpeg"}]
    text = conversion_markdown({"coco": _Summary()}, {"coco": tmp_path}, {"coco": rows})
    assert "| coco | 3 | 7 | 3 | crowd: 2, unreadable: 1 | 1 | 0 | 1.2 |" in text
    assert "| coco/img/7 | image | unreadable | bad \\| jpeg |" in text


def test_training_and_evaluation_markdown(tmp_path):
    records = [{"step": s, "loss": 1.0 / s, "iou": s / 100} for s in range(1, 51)]
    assert [r[0] for r in curve_rows(records, ["loss"], points=5)] == [1, 13, 25, 38, 50]
    text = training_markdown(records, {"latest": "/r/latest.ckpt"}, tmp_path)
    assert "| loss | 0.02 | 50 |" in text and "| iou | 0.5 | 50 |" in text and "/r/latest.ckpt" in text
    plot = tmp_path / "iou_by_size.png"
    text = evaluation_markdown(markdown_table(["a"], [[1]]), [plot], tmp_path)
    assert f"[iou_by_size.png]({plot.as_uri()})" in text


# ---- flip run bad input (no pipeline starts) ----------------------------------------------------------------

def test_flip_run_help_lists_sources_and_outputs(capsys):
    with pytest.raises(SystemExit):
        flip_main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--coco-images" in out and "--grabcut-root" in out and "OUT/eval/report" in out


def test_flip_run_bad_input_exits_2_quickly(tmp_path, capsys):
    t0 = time.perf_counter()
    assert flip_main(["run", "--out", str(tmp_path), "--coco-images", str(tmp_path / "missing"),
                      "--coco-annotations", str(tmp_path)]) == 2
    assert "images path" in capsys.readouterr().err
    assert flip_main(["run", "--out", str(tmp_path), "--ray-address", f"127.0.0.1:{_closed_port()}"]) == 2
    assert "does not answer" in capsys.readouterr().err
    assert flip_main(["run", "--out", str(tmp_path), "--eval-on", "coco"]) == 2
    assert "unknown source" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 15


def test_convert_and_train_script_is_flip_run():
    """`ray submit cluster/gpu-cluster.yaml flows/convert_and_train.py -- ARGS` runs this file as a script."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    result = subprocess.run([sys.executable, str(REPO_ROOT / "flows" / "convert_and_train.py"), "--help"],
                            capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flip run") and "--ray-address" in result.stdout


def test_flip_run_options_become_typed_flow_parameters(tmp_path):
    import argparse

    from flows.cli import add_parser, pipeline_parameters

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    images, annotations = tmp_path / "img", tmp_path / "ann.json"
    images.mkdir()
    annotations.write_text("{}")
    args = parser.parse_args(["run", "--out", str(tmp_path / "o"), "--coco-images", str(images),
                              "--coco-annotations", str(annotations), "--source", f"grabcut --root {tmp_path}",
                              "--eval-on", "grabcut", "--steps", "3", "--eval-instances", "0"])
    params = pipeline_parameters(args)
    assert [(s.format, s.use) for s in params["sources"]] == [("coco", "train"), ("grabcut", "both")]
    assert params["training"].steps == 3 and params["evaluation"].max_instances is None
    assert params["out_dir"] == str((tmp_path / "o").resolve())
    default = pipeline_parameters(parser.parse_args(["run", "--out", str(tmp_path / "d")]))
    (source,) = default["sources"]
    assert source.format == "procedural" and source.root == str((tmp_path / "d").resolve() / "procedural-data")
