"""Killed runs resume to identical output: a Ray worker killed mid-task (Ray retries the shard) and the driver
killed mid-run (the rerun keeps the finished shards and redoes the rest). Real Ray, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from datasets_spec.coco import CocoSpec
from flip_core.convert import convert_dataset
from tests.conftest import REPO_ROOT
from tests.test_convert import snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SLOW_SPEC = textwrap.dedent(
    """
    import sys, time
    from datasets_spec.coco import CocoSpec

    class SlowSpec(CocoSpec):
        # Sleeps before each image so that the test can kill things mid-run; same samples, same fingerprints.
        def load_image(self, sample):
            time.sleep(DELAY)
            return super().load_image(sample)
    """
)


@pytest.fixture(scope="module")
def clean_output(local_ray, tmp_path_factory):
    """The reference output: one uninterrupted conversion (shard size 2 -> 10 shards)."""
    from tests.conftest import shared_path

    out = tmp_path_factory.mktemp("clean")
    convert_dataset(_spec(shared_path), out, shard_size=2, num_workers=2, progress=False)
    return snapshot(out)


def _spec(shared_path, cls=CocoSpec):
    return cls(images=shared_path("coco", "val2017"),
               annotations=shared_path("coco", "annotations", "instances_val2017.json"))


def _slow_spec_class(delay: float):
    namespace: dict = {}
    exec(SLOW_SPEC.replace("DELAY", repr(delay)), namespace)  # defined by value, so Ray workers can unpickle it
    return namespace["SlowSpec"]


def _kill_and_reap(pid: int, descendants: list[psutil.Process]) -> None:
    """SIGKILL ``pid``; then give its (Ray) children a moment to exit on their own and kill any left, by PID."""
    os.kill(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(descendants, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def test_killed_worker_is_retried_to_identical_output(clean_output, shared_data, tmp_path):
    spec = _spec(shared_data, _slow_spec_class(0.4))
    result: dict = {}

    def run():
        try:
            result["summary"] = convert_dataset(spec, tmp_path, shard_size=2, num_workers=1, progress=False)
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    me = psutil.Process()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        if len(list((tmp_path / "_state").glob("*.json"))) >= 1:
            for proc in me.children(recursive=True):
                try:
                    if proc.cmdline() and proc.cmdline()[0].startswith("ray::convert_shard"):
                        proc.kill()
                        killed = proc.pid
                        break
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "never saw a running convert_shard worker to kill"
    assert "error" not in result, result.get("error")
    assert result["summary"].images == 19
    assert snapshot(tmp_path) == clean_output


def test_killed_driver_resumes_to_identical_output(clean_output, shared_data, tmp_path):
    script = tmp_path / "slow_convert.py"
    images = shared_data("coco", "val2017")
    ann = shared_data("coco", "annotations", "instances_val2017.json")
    out = tmp_path / "out"
    script.write_text(SLOW_SPEC.replace("DELAY", "0.4") + textwrap.dedent(
        f"""
        from flip_core.convert import convert_dataset
        convert_dataset(SlowSpec(images={str(images)!r}, annotations={str(ann)!r}), {str(out)!r},
                        shard_size=2, num_workers=1, progress=False)
        """
    ))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    driver = subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list((out / "_state").glob("*.json"))) < 3 and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver exited before it could be killed"
            time.sleep(0.1)
        descendants = psutil.Process(driver.pid).children(recursive=True)
    finally:
        _kill_and_reap(driver.pid, descendants if "descendants" in locals() else [])
        driver.wait(timeout=30)
    done = len(list((out / "_state").glob("*.json")))
    assert 3 <= done < 10 and not (out / "index.json").exists()
    summary = convert_dataset(_spec(shared_data), out, shard_size=2, num_workers=2, progress=False)
    assert summary.skipped_shards >= 3 and summary.shards == 10
    assert snapshot(out) == clean_output
