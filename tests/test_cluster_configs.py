"""The Ray cluster launcher configs in cluster/ validate against Ray's own cluster-config schema.

Validation runs the same steps ``ray up`` runs locally before it contacts any cloud: the raw YAML against
``ray/autoscaler/ray-schema.json``, then Ray's default filling (``prepare_config``, which for the ``local`` provider
also expands ``head_ip``/``worker_ips`` into a node type) and ``validate_config`` on the result.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO_ROOT

CLUSTER_DIR = REPO_ROOT / "cluster"
CONFIGS = ["gpu-cluster.yaml", "local-cluster.yaml"]


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER_DIR / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_against_ray_schema(name, ray_schema):
    config = _load(name)
    jsonschema.validate(config, ray_schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", CONFIGS)
def test_setup_installs_pinned_torch_then_project_from_git(name):
    commands = " \n".join(_load(name)["setup_commands"])
    assert "pip install torch==2.13.0" in commands
    assert commands.index("torch==2.13.0") < commands.index("git+")
    assert "flip-pipeline @ git+" in commands


def test_gpu_cluster_has_head_and_gpu_worker_type():
    config = _load("gpu-cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    workers = {name: spec for name, spec in types.items() if name != config["head_node_type"]}
    assert workers, "no worker node type"
    gpu_families = ("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5.")
    assert any(spec["node_config"]["InstanceType"].startswith(gpu_families) for spec in workers.values())
    assert all(spec["max_workers"] <= config["max_workers"] for spec in workers.values())


def test_local_cluster_expands_to_listed_hosts():
    prepared = prepare_config(_load("local-cluster.yaml"))
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(prepared["provider"]["worker_ips"])


def test_schema_check_is_not_vacuous(ray_schema):
    config = _load("gpu-cluster.yaml")
    config["available_node_types"]["ray.worker.gpu"]["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(config, ray_schema)
    broken = _load("local-cluster.yaml")
    broken["head_start_ray_commands"] = "ray start --head"  # must be a list of commands
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
