"""A 2-node local Ray cluster (``ray.cluster_utils.Cluster`` on 127.0.0.1) converts to the same bytes as 1 worker."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from datasets_spec.coco import CocoSpec
from flip_core.convert import convert_dataset
from tests.test_convert import snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_two_nodes_give_the_same_bytes_as_one_worker(shared_data, tmp_path):
    spec = CocoSpec(images=shared_data("coco", "val2017"),
                    annotations=shared_data("coco", "annotations", "instances_val2017.json"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        try:
            assert sum(1 for n in ray.nodes() if n["Alive"]) == 2
            two = convert_dataset(spec, tmp_path / "two", shard_size=3, num_workers=2, progress=False)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
    one = convert_dataset(spec, tmp_path / "one", shard_size=3, num_workers=1, progress=False)  # own local Ray
    assert (two.images, two.shards) == (one.images, one.shards) == (19, 7)
    assert snapshot(tmp_path / "two") == snapshot(tmp_path / "one")
