"""Whole jobs survive failures on a real Ray: a generator or verifier replica killed mid-job,
a node lost, the solving process SIGKILLed and resumed. Each time every problem gets an
answer and no cap is passed (per problem and per job).

One simulated two-node cluster (``ray.cluster_utils.Cluster``) serves the module. The
replicas are the scripted backends slowed down by ``test_fault.SlowScripted*`` (found by
the actors through PYTHONPATH), which touch a marker file per call, so a test kills a
replica while it is provably busy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_HEALTH_CHECKS, TESTS_DIR, scripted_job

from ponder.engine.rundir import read_results
from ponder.engine.service import EngineService
from ponder.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(TESTS_DIR).parent
PER_PROBLEM, TOTAL = 6_000_000, 40_000_000
# The SIGKILL test's 8 problems: an uninterrupted run spends ~42e6, so each can be answered,
# and the job cap is still below 8 x PER_PROBLEM. (40e6 would leave some unanswered by design.)
SOLVE_TOTAL = 46_000_000


@pytest.fixture(scope="module")
def cluster(make_cluster):
    return make_cluster(dict(num_cpus=2, include_dashboard=False, _system_config=FAST_HEALTH_CHECKS))


def job_config(scripted, marker_dir, slow: str, placement: str = "PACK", delay_s: float = 0.05):
    """Two replicas of each model; ``slow`` ("generator"/"verifier") takes ``delay_s`` per call."""
    def role(name):
        kwargs = {"problems": scripted, "seed": 1}
        backend = "scripted"
        if name == slow:
            kind = "Generator" if name == "generator" else "Verifier"
            backend = f"test_fault:SlowScripted{kind}"
            kwargs.update(delay_s=delay_s, marker_dir=str(marker_dir))
        return {"backend": backend, "num_cpus": 0.25, "num_replicas": 2, "placement": placement,
                "kwargs": kwargs}

    return load_config(data={
        "search": {"strategy": "beam", "params": {"beam_width": 2, "expansion_factor": 2}, "seed": 3},
        "generator": role("generator"), "verifier": role("verifier"),
        "budget": {"flops_per_problem": PER_PROBLEM, "flops_total": TOTAL},
        "engine": {"max_batch_requests": 2, "max_in_flight_batches": 1},
        "output": {"progress": "off"}})


def run_service_job(tmp_path, slow: str, kill, placement: str = "PACK", delay_s: float = 0.05) -> dict:
    """Submit 6 problems to an EngineService on Ray pools; ``kill(pool_of_slow_role)`` mid-job."""
    from ponder.cluster.pools import build_ray_pools

    task, problems, gen, _ = scripted_job(num_problems=6)
    markers = tmp_path / "markers"
    markers.mkdir()
    config = job_config(gen.problems, markers, slow, placement, delay_s)
    pools = build_ray_pools(config, connect_ray=False)
    svc = EngineService(config, tmp_path / "state", pools, task=task, checkpoint_every_s=1)
    try:
        job_id = svc.submit(problems)
        pool = getattr(pools, slow)
        kill(pool, markers)
        deadline = time.monotonic() + 180
        while (result := svc.result(job_id)) is None:
            assert time.monotonic() < deadline, svc.status(job_id)
            time.sleep(0.2)
        result["pool_stats"] = pool.stats()
    finally:
        svc.stop()
    return result


def assert_all_answered(records):
    unanswered = [(r["id"], r["answer"], r["stop_reason"], r["error"]) for r in records
                  if r["answer"] is None or r["stop_reason"] == "error"]
    assert not unanswered, unanswered


def assert_complete_within_caps(records, num_problems=6):
    assert sorted(r["id"] for r in records) == [str(i) for i in range(num_problems)]
    assert_all_answered(records)
    assert all(r["flops"] <= r["budget_flops"] <= PER_PROBLEM for r in records)
    assert sum(r["flops"] for r in records) <= TOTAL


def kill_a_busy_replica(pool, markers) -> None:
    victim = pool.replica_info()[0]
    deadline = time.monotonic() + 60
    while not any(markers.glob(f"{victim.pid}-*")):  # wait until it is inside a call
        assert time.monotonic() < deadline, "the replica never got a call"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)


@pytest.mark.parametrize("role", ["generator", "verifier"])
def test_a_replica_killed_mid_job(cluster, tmp_path, role):
    result = run_service_job(tmp_path, role, kill_a_busy_replica)
    assert result["state"] == "done"
    assert_complete_within_caps(result["results"])
    assert result["pool_stats"]["num_failures"] >= 1  # the kill was seen, and survived


def test_a_node_lost_mid_job(cluster, tmp_path):
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()

    def lose_the_node(pool, markers):
        deadline = time.monotonic() + 60
        while not any(i.node_id == node.node_id for i in pool.replica_info()):
            assert time.monotonic() < deadline, "no replica landed on the extra node"
            time.sleep(0.05)
        victim = next(i for i in pool.replica_info() if i.node_id == node.node_id)
        while not any(markers.glob(f"{victim.pid}-*")):
            assert time.monotonic() < deadline, "the replica on the node never got a call"
            time.sleep(0.01)
        cluster.remove_node(node, allow_graceful=False)

    # Calls of 0.5 s: removing a node takes longer than a 50 ms call on a loaded box, and the
    # call in flight must still be running when the node goes for the loss to be observed.
    result = run_service_job(tmp_path, "generator", lose_the_node, placement="STRICT_SPREAD",
                             delay_s=0.5)
    assert result["state"] == "done"
    assert_complete_within_caps(result["results"])
    assert result["pool_stats"]["num_failures"] >= 1


def solve_args(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ponder.cli", "solve", "--range", "0:8", "--out", str(out),
            "--no-progress", "--set", "output.checkpoint_every_s=0.2",
            "--set", "generator.backend=test_fault:SlowScriptedGenerator",
            "--set", "generator.kwargs.instant_steps=4", "--set", "generator.kwargs.delay_s=0.05",
            "--set", f"generator.kwargs.marker_dir={out.parent}",
            "--set", "verifier.backend=scripted", "--set", "verifier.kwargs.instant=true",
            "--set", "generator.num_cpus=0.25", "--set", "verifier.num_cpus=0.25",
            "--set", "search.strategy=beam", "--set", "search.params.beam_width=2",
            "--set", "search.params.expansion_factor=2",
            "--set", "search.params.pace=false",  # the spend SOLVE_TOTAL is sized for is unpaced
            "--set", f"budget.flops_per_problem={PER_PROBLEM}",
            "--set", f"budget.flops_total={SOLVE_TOTAL}",
            "--set", "ray.runtime_env=" + json.dumps({"env_vars": {"PYTHONPATH": TESTS_DIR}}),
            *extra]


def _solve_has_resume() -> bool:
    from ponder.cli import build_parser

    try:
        build_parser(["solve"]).parse_args(["solve", "--resume"])
    except SystemExit:
        return False
    return True


@pytest.mark.skipif(not _solve_has_resume(), reason="ponder solve has no --resume yet")
def test_sigkill_the_solving_process_then_resume(cluster, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": cluster.address,
           "PYTHONPATH": os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(solve_args(out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while not ((out / "checkpoint.ponder").exists() and (out / "results.jsonl").exists()
               and (out / "results.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the job never checkpointed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(out)
    assert 2 <= len(before) < 8, "the kill should land mid-job"

    done = subprocess.run(solve_args(out, "--resume"), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_results(out)
    assert sorted(int(r["id"]) for r in records) == list(range(8))  # each once, none lost
    assert_all_answered(records)
    for old in before:  # finished problems were not redone
        assert next(r for r in records if r["id"] == old["id"]) == old
    assert all(r["flops"] <= r["budget_flops"] <= PER_PROBLEM for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_flops"] == sum(r["flops"] for r in records) <= SOLVE_TOTAL
    assert summary["num_problems"] == 8
