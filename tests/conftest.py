"""Shared fixtures. Environment defaults are set before anything imports Ray, DeepSpeed or Prefect."""

from __future__ import annotations

import os
from pathlib import Path

for _k, _v in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_RUNNER_POLL_FREQUENCY": "2",
}.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FLIP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the calling test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not found at {path} (expected ../shared/data beside the checkout)")
    return path


@pytest.fixture
def shared_data():
    """Callable fixture: ``shared_data("coco", "val2017")`` -> Path, or skip when ../shared is absent."""
    return shared_path


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance (127.0.0.1, 2 CPUs, no dashboard) for one test module; shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
