"""Flows against a real (temporary) Prefect API: prefect_test_harness once per module, one local Ray shared by the
flows of this module. The conversion flow turns a corrupt image into a rejects row and an artifact row (the flow
completes), retries a transient I/O error, fails bad input without retrying, and resumes on rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from datasets_spec import SPECS

NUM_IMAGES = 5


# ---- a dataset format whose annotation file fails to open once (registered as "flaky" by the test) -------------

def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True)
    parser.add_argument("--attempts-file", required=True)


def from_cli_args(args: argparse.Namespace):
    from datasets_spec.procedural import ProceduralConfig, make_spec

    attempts = Path(args.attempts_file)
    count = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(count))
    if count == 1:
        raise OSError(5, "Input/output error (simulated storage hiccup)", args.root)
    return make_spec(Path(args.root), ProceduralConfig(num_images=2, seed=9))


# ---- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifact(key: str, flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert found, f"no artifact {key!r} on flow run {flow_run_id}"
    return found[0].data


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


# ---- tests ----------------------------------------------------------------------------------------------------

def test_corrupt_image_is_a_reject_transient_io_is_retried_rerun_resumes(tmp_path, monkeypatch, prefect_api,
                                                                          local_ray):
    import pyarrow.parquet as pq

    from datasets_spec.procedural import ProceduralConfig, generate
    from flows.convert import convert
    from flows.params import ConvertParams, DataSource

    monkeypatch.setitem(SPECS, "flaky", __name__)
    generate(tmp_path / "proc", ProceduralConfig(num_images=NUM_IMAGES, seed=1))
    corrupt = tmp_path / "proc" / "images" / "procedural_000002.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated JPEG: header only
    attempts = tmp_path / "attempts.txt"
    (tmp_path / "flaky").mkdir()
    sources = [
        DataSource(format="procedural", root=str(tmp_path / "proc"), options={"num-images": NUM_IMAGES, "seed": 1}),
        DataSource(format="flaky", root=str(tmp_path / "flaky"), options={"attempts-file": str(attempts)}),
    ]
    state = convert(sources, str(tmp_path / "shards"), ConvertParams(shard_size=2), return_state=True)
    assert state.is_completed(), state.message
    assert attempts.read_text() == "2"  # failed once with EIO, retried, then converted

    rejects = pq.read_table(tmp_path / "shards" / "procedural" / "rejects.parquet").to_pylist()
    bad = [r for r in rejects if r["source_id"] == "procedural/img/2"]
    assert bad and bad[0]["stage"] == "image" and bad[0]["reason"] == "unreadable"
    markdown = _artifact("conversion-summary", state.state_details.flow_run_id)
    assert "| procedural/img/2 | image | unreadable |" in markdown
    assert f"| procedural | {NUM_IMAGES - 1} |" in markdown and "| flaky | 2 |" in markdown
    flaky_run = next(t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("convert-flaky"))
    assert flaky_run.run_count == 2 and flaky_run.state.is_completed()

    again = convert(sources, str(tmp_path / "shards"), ConvertParams(shard_size=2), return_state=True)
    assert again.is_completed()
    markdown = _artifact("conversion-summary", again.state_details.flow_run_id)
    assert f"| procedural | {NUM_IMAGES - 1} |" in markdown and "| 3 | 3 |" in markdown  # 3 shards, 3 reused


def test_bad_options_fail_at_once_without_retry(tmp_path, monkeypatch, prefect_api, local_ray):
    from flows.convert import convert
    from flows.params import DataSource

    monkeypatch.setitem(SPECS, "flaky", __name__)
    options = {"attempts-file": str(tmp_path / "n"), "no-such-option": 1}
    source = DataSource(format="flaky", root=str(tmp_path), options=options)
    state = convert([source], str(tmp_path / "shards"), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="unrecognized arguments: --no-such-option"):
        state.result()
    (task_run,) = _task_runs(state.state_details.flow_run_id)
    assert task_run.run_count == 1
