"""Placement and failure on a simulated multi-node cluster (``ray.cluster_utils.Cluster``).

Three Ray nodes run on this machine, each with one CPU and a custom resource
naming it; zone_b claims two GPUs and zone_c one (logical resources: nothing uses
a GPU, Ray only books them). Replicas of half a CPU would all fit on one node, so
where they land is decided by the placement config, which is what these tests check.
"""

from __future__ import annotations

import time

import pytest
import ray
from conftest import FAST_HEALTH_CHECKS

from ponder.actors import collect
from ponder.cluster.pools import build_pool
from ponder.search.messages import GenerateRequest
from ponder.search.scripted import ScriptedProblem

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PROBLEMS = tuple(ScriptedProblem(prompt=f"node puzzle {i}\n") for i in range(2))
ZONES = ("zone_a", "zone_b", "zone_c")  # one custom resource per node, head first
GPUS = {"zone_a": 0, "zone_b": 2, "zone_c": 1}  # logical GPUs per node


@pytest.fixture(scope="module")
def cluster(make_cluster):
    return make_cluster(
        dict(num_cpus=1, resources={ZONES[0]: 1}, include_dashboard=False,
             _system_config=FAST_HEALTH_CHECKS),
        tuple(dict(num_cpus=1, num_gpus=GPUS[zone], resources={zone: 1}) for zone in ZONES[1:]))


def zone_of(node_id: str) -> str:
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    return next(z for z in ZONES if z in node["Resources"])


def scripted(placement: str, num_replicas: int = 2, **extra) -> dict:
    return dict(backend="scripted", num_replicas=num_replicas, num_cpus=0.5, placement=placement,
                kwargs=dict(problems=PROBLEMS), **extra)


def test_cluster_has_three_nodes(cluster):
    assert sorted(zone_of(n["NodeID"]) for n in ray.nodes() if n["Alive"]) == sorted(ZONES)


# SPREAD / PACK are best effort in Ray, so only the strict strategies are asserted.
@pytest.mark.parametrize("strategy, distinct", [("STRICT_SPREAD", 3), ("STRICT_PACK", 1)])
def test_replicas_land_where_the_placement_strategy_says(cluster, strategy, distinct):
    replicas = 3 if distinct == 3 else 2
    pool, placement = build_pool(scripted(strategy, replicas), "generator", timeout_s=120)
    try:
        nodes = [info.node_id for info in pool.replica_info()]
        assert len(set(nodes)) == distinct, (strategy, nodes)
    finally:
        pool.shutdown()
        placement.remove()


def test_custom_resources_pin_replicas_to_their_node(cluster):
    pool, placement = build_pool(scripted("PACK", resources={"zone_c": 0.5}), "verifier")
    try:
        assert {zone_of(info.node_id) for info in pool.replica_info()} == {"zone_c"}
    finally:
        pool.shutdown()
        placement.remove()


def test_gpu_replicas_go_to_gpu_nodes(cluster):
    cfg = scripted("STRICT_SPREAD", num_gpus=1)
    pool, placement = build_pool(cfg, "generator")
    try:
        assert sorted(zone_of(info.node_id) for info in pool.replica_info()) == ["zone_b", "zone_c"]
    finally:
        pool.shutdown()
        placement.remove()


def test_a_tensor_parallel_replica_packs_its_gpus_on_one_node(cluster):
    cfg = scripted("SPREAD", num_replicas=1, tensor_parallel_size=2)
    pool, placement = build_pool(cfg, "generator")
    try:
        [group] = placement.groups
        table = ray.util.placement_group_table(group)
        assert table["strategy"] == "STRICT_PACK"
        assert table["bundles"] == {0: {"CPU": 0.5, "GPU": 1.0}, 1: {"GPU": 1.0}}
        bundle_zones = {zone_of(node) for node in table["bundles_to_node_id"].values()}
        assert bundle_zones == {"zone_b"}  # the only node with two GPUs
        assert zone_of(pool.replica_info()[0].node_id) == "zone_b"
    finally:
        pool.shutdown()
        placement.remove()


def test_losing_a_node_loses_no_request(cluster, tmp_path):
    cfg = dict(backend="test_fault:SlowScriptedGenerator", num_replicas=2, num_cpus=0.5,
               placement="STRICT_SPREAD",
               kwargs=dict(problems=PROBLEMS, delay_s=0.5, marker_dir=str(tmp_path)))
    pool, placement = build_pool(cfg, "generator", max_in_flight_batches=1, timeout_s=120)
    try:
        infos = pool.replica_info()
        head = cluster.head_node.node_id
        victim = next(i for i in infos if i.node_id != head)
        node = next(n for n in cluster.worker_nodes if n.node_id == victim.node_id)
        batches = [[GenerateRequest(request_id=10 * b + i, prefix=PROBLEMS[i % 2].prompt,
                                    prefix_id=f"n{i % 2}:0") for i in range(4)] for b in range(6)]
        for batch in batches:
            pool.dispatch(batch)
        while not any(tmp_path.glob(f"{victim.pid}-*")):
            time.sleep(0.02)
        cluster.remove_node(node, allow_graceful=False)
        got, deadline = [], time.monotonic() + 120
        while pool.num_in_flight:
            assert time.monotonic() < deadline, pool.stats()
            got += collect([pool], timeout=1)
        assert sorted(r.request_id for r in got) == sorted(r.request_id for b in batches for r in b)
        assert pool.stats()["num_failures"] >= 1
        while pool.stats()["num_healthy"] < 2:  # Ray re-places the lost bundle, restarts the actor
            assert time.monotonic() < deadline, pool.stats()
            collect([pool], timeout=0.5)
        nodes = {info.node_id for info in pool.replica_info()}
        assert len(nodes) == 2 and victim.node_id not in nodes  # still spread, off the lost node
    finally:
        pool.shutdown()
        placement.remove()
