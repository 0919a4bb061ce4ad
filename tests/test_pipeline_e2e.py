"""End to end, with real components only: `flip run` as a user runs it, a real Prefect server + process worker +
`prefect deploy --all`, and `ray job submit` to a `ray start --head` on 127.0.0.1.

Every process a test starts is stopped by its PID (a worker needs a second SIGTERM: stack notes 4); the helper then
checks that none of the process's children outlived it. Work is shared where possible: the real COCO sample goes
through the pipeline twice (Prefect deployment, Ray job) with a 2-step training and 8 evaluated instances; the
procedural default runs exactly as `flip run` with no arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow  # minutes each on 2 cores (real Prefect server, Ray head, Ray Train + DeepSpeed)

VENV_BIN = Path(sys.executable).parent
QUICK = ["--steps", "2", "--eval-instances", "8"]


# ---- process helpers ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "DS_ACCELERATOR": "cpu", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra)
    return env


def stop_by_pid(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM ``proc`` (twice if needed, then SIGKILL) and kill, by PID, any child that outlived it."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for attempt in range(2):
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s if attempt == 0 else 10)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:
        child.kill()
    assert not alive, f"children of {proc.args[:3]} outlived it: {[c.pid for c in alive]}"


@contextlib.contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            yield proc
        finally:
            stop_by_pid(proc)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def run(cmd: list[str], env: dict[str, str], timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} -> {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def coco_args() -> list[str]:
    images = shared_path("coco", "val2017")
    annotations = shared_path("coco", "annotations", "instances_val2017.json")
    return ["--coco-images", str(images), "--coco-annotations", str(annotations)]


def assert_outputs(out: Path, source: str) -> None:
    shards = out / "shards" / source
    assert (shards / "manifest.parquet").is_file() and (shards / "index.json").is_file()
    assert (out / "train" / "checkpoints" / "latest.ckpt").is_file()
    report = out / "eval" / "report"
    assert (report / "summary.csv").is_file() and (report / "summary.md").is_file()
    assert list(report.glob("*.png")), "no plots in the report"


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


# ---- flip run -------------------------------------------------------------------------------------------------

def test_flip_run_no_arguments_on_procedural_default(tmp_path, prefect_home):
    """`flip run` exactly as documented (cwd = an empty directory), with a Prefect server URL that is down:
    the run falls back to the ephemeral API, says so, and completes."""
    dead = f"http://127.0.0.1:{free_port()}/api"
    env = base_env(prefect_home, PREFECT_API_URL=dead)
    t0 = time.monotonic()
    result = subprocess.run([str(VENV_BIN / "flip"), "run"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    wall = time.monotonic() - t0
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "FALLING BACK to Prefect's ephemeral API" in result.stderr
    out = tmp_path / "flip-run"
    assert f"shards (procedural): {out / 'shards' / 'procedural'}" in result.stdout
    assert f"report:        {out / 'eval' / 'report'}" in result.stdout
    assert_outputs(out, "procedural")
    # Under 5 min on an idle 2-core machine (BENCHMARKS.md); the bound here leaves room for a shared CI box.
    assert wall < 540, f"flip run took {wall:.0f} s"


# ---- Prefect server + process worker + deployments ------------------------------------------------------------

def _flow_run_id(output: str) -> str:
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def _api(env):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


def test_prefect_deployments_convert_and_train_then_evaluate_alone(tmp_path, prefect_home):
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey,
                                                FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId)

    port = free_port()
    env = base_env(tmp_path / "server-home", PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    prefect = str(VENV_BIN / "prefect")
    coco = coco_args()
    out = tmp_path / "out"
    log = tmp_path / "server.log"
    t0 = time.monotonic()
    with background([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log) as server:
        wait_http(f"http://127.0.0.1:{port}/api/health", server, log)
        print(f"server healthy after {time.monotonic() - t0:.0f} s")
        for pool in ("flip-local", "flip-gpu"):
            run([prefect, "work-pool", "create", pool, "--type", "process"], env)
        deployed = run([prefect, "--no-prompt", "deploy", "--all"], env)
        for name in ("convert-and-train/local", "evaluate/local", "convert-and-train/gpu-cluster"):
            assert f"Deployment '{name}' successfully created" in deployed.stdout.replace("\n", " ")

        bogus = run([prefect, "deployment", "run", "convert-and-train/local", "--param", "trainig={}"], env,
                    check=False)
        assert bogus.returncode != 0 and "'trainig'" in bogus.stdout + bogus.stderr

        missing = {"format": "coco", "images": str(tmp_path / "no-such-dir"), "annotations": coco[3]}
        submitted = run([prefect, "deployment", "run", "convert-and-train/local",
                         "--param", f"sources={json.dumps([missing])}"], env)
        missing_id = _flow_run_id(submitted.stdout)  # runs (and fails at parameter validation) with the pipeline

        source = {"format": "coco", "images": coco[1], "annotations": coco[3]}
        submitted = run([prefect, "deployment", "run", "convert-and-train/local",
                         "--param", f"sources={json.dumps([source])}", "--param", f"out_dir={out}",
                         "--param", 'training={"steps": 2}', "--param", 'evaluation={"max_instances": 8}'], env)
        pipeline_id = _flow_run_id(submitted.stdout)
        print(f"pipeline submitted after {time.monotonic() - t0:.0f} s")
        run([prefect, "worker", "start", "--pool", "flip-local", "--type", "process", "--run-once"], env, 600)
        print(f"pipeline run done after {time.monotonic() - t0:.0f} s")
        with _api(env) as client:
            pipeline = client.read_flow_run(pipeline_id)
            assert pipeline.state.is_completed(), pipeline.state.message
            failed = client.read_flow_run(missing_id)
            assert failed.state.is_failed() and "no-such-dir' does not exist" in failed.state.message
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_id])))
            assert sorted(client.read_flow(c.flow_id).name for c in children) == ["convert", "evaluate", "train"]
            artifacts = {a.key: a.data for a in client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[c.id for c in children])))}
        assert "| coco | 19 |" in artifacts["conversion-summary"] and "crowd" in artifacts["conversion-summary"]
        assert "latest.ckpt" in artifacts["training-summary"] and "| step |" in artifacts["training-summary"]
        assert "iou_by_size.png](file://" in artifacts["evaluation-report"]
        assert_outputs(out, "coco")

        checkpoint = out / "train" / "checkpoints" / "latest.ckpt"
        stamps = {p: p.stat().st_mtime_ns for p in [checkpoint, *(out / "shards" / "coco").glob("*.h5")]}
        submitted = run([prefect, "deployment", "run", "evaluate/local",
                         "--param", f"checkpoints={json.dumps([str(checkpoint)])}",
                         "--param", f"data={json.dumps([str(out / 'shards' / 'coco')])}",
                         "--param", f"out_dir={tmp_path / 'eval-again'}",
                         "--param", 'params={"max_instances": 8}'], env)
        evaluate_id = _flow_run_id(submitted.stdout)
        run([prefect, "worker", "start", "--pool", "flip-local", "--type", "process", "--run-once"], env, 600)
        print(f"evaluation run done after {time.monotonic() - t0:.0f} s")
        with _api(env) as client:
            evaluation = client.read_flow_run(evaluate_id)
            assert evaluation.state.is_completed(), evaluation.state.message
            assert not client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[evaluate_id])))
            task_names = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[evaluate_id])))}
            assert task_names == {"evaluate-checkpoints"}
            report = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["evaluation-report"]), flow_run_id=ArtifactFilterFlowRunId(
                    any_=[evaluate_id])))
            assert report and "eval-again" in report[0].data
            all_runs = client.read_flow_runs()
        # the failed submission, the pipeline and its 3 subflows, the lone evaluation: nothing else ran
        assert len(all_runs) == 1 + 1 + 3 + 1
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no shard or checkpoint was rewritten
        assert (tmp_path / "eval-again" / "report" / "summary.csv").is_file()


# ---- ray job submit to a ray start --head on 127.0.0.1 -------------------------------------------------------

def test_ray_job_submit_flip_run_on_real_coco(tmp_path, prefect_home, request):
    ports: set[int] = set()
    while len(ports) < 7:  # every port the head binds: others' clusters use the defaults (6379, 8265, 52365, ...)
        ports.add(free_port())
    gcs, dash, client, agent_http, agent_grpc, runtime_env, metrics = sorted(ports)
    temp_dir = tempfile.mkdtemp(prefix="flip-ray-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = base_env(prefect_home)
    log = tmp_path / "ray-head.log"
    out = tmp_path / "out"
    head = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
            f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]
    request.addfinalizer(lambda: shutil.rmtree(temp_dir, ignore_errors=True))
    with background(head, env, log) as proc:
        wait_http(f"http://127.0.0.1:{dash}/api/version", proc, log)
        submit = [str(VENV_BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
                  sys.executable, "-m", "flip_core.cli", "run", "--out", str(out), *coco_args(), *QUICK,
                  "--num-workers", "2"]
        for _ in range(60):  # the dashboard answers before the head's job agent has registered
            job = run(submit, env, 600, check=False)
            if "No available agent to submit job" not in job.stdout + job.stderr:
                break
            time.sleep(2)
        assert job.returncode == 0, f"{job.stdout[-6000:]}\n{job.stderr[-3000:]}"
        assert "succeeded" in job.stdout and f"127.0.0.1:{gcs}" in job.stdout  # the driver joined this cluster
    assert f"shards (coco): {out / 'shards' / 'coco'}" in job.stdout
    assert_outputs(out, "coco")
