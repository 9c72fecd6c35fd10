"""Replica failures on a real local Ray: kill actors mid-call; every request still comes back once.

The scripted backends are slowed down here (``SlowScripted*``, loaded by the actors
as ``test_fault:SlowScripted...`` through PYTHONPATH) and drop a marker file when a
call starts, so a test kills a replica while it is provably busy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import ray

from ponder.actors import NoReplicasError, ReplicaPool, collect
from ponder.cluster.pools import build_pool
from ponder.search.messages import GenerateRequest, ScoreRequest
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedVerifier

pytestmark = pytest.mark.ray

PROBLEMS = tuple(ScriptedProblem(prompt=f"puzzle {i}\n", answer=str(i)) for i in range(3))


class _Slow:
    """Sleeps ``delay_s`` per call after touching ``<marker_dir>/<pid>-<call>``."""

    def __init__(self, delay_s: float, marker_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.marker_dir = delay_s, marker_dir

    def _started(self) -> None:
        self._num_started = getattr(self, "_num_started", 0) + 1
        Path(self.marker_dir, f"{os.getpid()}-{self._num_started}").touch()
        time.sleep(self.delay_s)


class SlowScriptedGenerator(_Slow, ScriptedGenerator):
    """A ScriptedGenerator that takes ``delay_s`` seconds per call (test only)."""

    def generate(self, requests):
        self._started()
        return super().generate(requests)


class SlowScriptedVerifier(_Slow, ScriptedVerifier):
    """A ScriptedVerifier that takes ``delay_s`` seconds per call (test only)."""

    def score(self, requests):
        self._started()
        return super().score(requests)


def slow_cfg(role: str, marker_dir: Path, num_replicas: int = 2, delay_s: float = 0.6) -> dict:
    cls = "SlowScriptedGenerator" if role == "generator" else "SlowScriptedVerifier"
    return dict(backend=f"test_fault:{cls}", num_replicas=num_replicas, num_cpus=0.25,
                kwargs=dict(problems=PROBLEMS, seed=7, delay_s=delay_s, marker_dir=str(marker_dir)))


def gen_batches(num_batches: int, size: int) -> list[list[GenerateRequest]]:
    return [[GenerateRequest(request_id=b * 100 + i, prefix=PROBLEMS[i % 3].prompt, n=2, seed=i,
                             prefix_id=f"q{(b + i) % 3}:0") for i in range(size)]
            for b in range(num_batches)]


def score_batches(num_batches: int, size: int) -> list[list[ScoreRequest]]:
    return [[ScoreRequest(request_id=b * 100 + i, prompt=PROBLEMS[i % 3].prompt,
                          paths=[["step 1: right"], ["step 1: wrong 1", "step 2: right"]],
                          prefix_id=f"q{(b + i) % 3}:0") for i in range(size)]
            for b in range(num_batches)]


def wait_until_busy(marker_dir: Path, pid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(marker_dir.glob(f"{pid}-*")):
        assert time.monotonic() < deadline, f"replica pid {pid} never started a call"
        time.sleep(0.02)


def drain(pool: ReplicaPool, timeout_s: float = 120) -> list:
    got, deadline = [], time.monotonic() + timeout_s
    while pool.num_in_flight:
        assert time.monotonic() < deadline, f"{pool.num_in_flight} requests never came back"
        got += collect([pool], timeout=1)
    return got


def wait_healthy(pool: ReplicaPool, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while pool.stats()["num_healthy"] < pool.num_replicas:
        assert time.monotonic() < deadline, f"replicas never recovered: {pool.stats()}"
        collect([pool], timeout=0.5)  # handles the liveness probes


def test_generator_killed_mid_call_restarts_and_loses_nothing(ray_runtime, tmp_path):
    pool, placement = build_pool(slow_cfg("generator", tmp_path), "generator", max_in_flight_batches=1)
    try:
        victim = pool.replica_info()[0]
        batches = gen_batches(6, 4)
        for batch in batches:
            pool.dispatch(batch)
        wait_until_busy(tmp_path, victim.pid)
        ray.kill(pool.actors[0], no_restart=False)  # Ray restarts it (max_restarts=-1)
        got = drain(pool)
        expected = ScriptedGenerator(PROBLEMS, seed=7).generate([r for b in batches for r in b])
        assert sorted(got, key=lambda r: r.request_id) == expected  # each exactly once, right texts
        stats = pool.stats()
        assert stats["num_failures"] >= 1 and stats["num_redispatched"] >= 1
        assert stats["num_given_up"] == 0 and stats["num_replaced"] == 0
        wait_healthy(pool)
        info = pool.replica_info()[0]
        assert info.restarted and info.pid != victim.pid
    finally:
        pool.shutdown()
        placement.remove()


def test_verifier_process_crash_mid_call_loses_nothing(ray_runtime, tmp_path):
    pool, placement = build_pool(slow_cfg("verifier", tmp_path), "verifier", max_in_flight_batches=2)
    try:
        victim = pool.replica_info()[1]
        batches = score_batches(5, 3)
        for batch in batches:
            pool.dispatch(batch)
        wait_until_busy(tmp_path, victim.pid)
        os.kill(victim.pid, signal.SIGKILL)  # a crash, not a polite ray.kill
        got = drain(pool)
        expected = ScriptedVerifier(PROBLEMS, seed=7).score([r for b in batches for r in b])
        assert sorted(got, key=lambda r: r.request_id) == expected
        assert pool.stats()["num_failures"] >= 1 and pool.stats()["num_given_up"] == 0
    finally:
        pool.shutdown()
        placement.remove()


def test_a_replica_dead_for_good_is_rebuilt_by_the_factory(ray_runtime, tmp_path):
    pool, placement = build_pool(slow_cfg("generator", tmp_path, delay_s=0.3), "generator",
                                 max_in_flight_batches=1)
    try:
        victim = pool.replica_info()[0]
        batches = gen_batches(4, 3)
        for batch in batches:
            pool.dispatch(batch)
        wait_until_busy(tmp_path, victim.pid)
        ray.kill(pool.actors[0], no_restart=True)
        got = drain(pool)
        assert sorted(r.request_id for r in got) == sorted(r.request_id for b in batches for r in b)
        wait_healthy(pool)
        assert pool.stats()["num_replaced"] == 1
        assert pool.replica_info()[0].pid != victim.pid
    finally:
        pool.shutdown()
        placement.remove()


def test_a_pool_whose_replicas_all_died_for_good_says_so(ray_runtime, tmp_path):
    pool, placement = build_pool(slow_cfg("generator", tmp_path, num_replicas=1, delay_s=0.3),
                                 "generator")
    bare = ReplicaPool(pool.actors, "generate", factory=None)  # nothing to rebuild with
    try:
        bare.dispatch(gen_batches(1, 2)[0])
        ray.kill(bare.actors[0], no_restart=True)
        with pytest.raises(NoReplicasError, match="every replica is dead"):
            drain(bare, timeout_s=60)
    finally:
        pool.shutdown()
        placement.remove()


def test_a_batch_waiting_for_company_goes_when_its_wait_is_over(ray_runtime, tmp_path):
    pool, placement = build_pool(slow_cfg("verifier", tmp_path, num_replicas=1, delay_s=1.0),
                                 "verifier", max_in_flight_batches=2, max_batch_requests=8,
                                 batch_wait_s=0.2)
    try:
        first, second, third = score_batches(3, 2)
        pool.dispatch(first, tokens=10)  # nothing in flight: goes at once (the call takes 1 s)
        pool.dispatch(second, tokens=10)  # a call is in flight: waits for company
        pool.dispatch(third, tokens=10)  # and gets some
        assert pool.stats()["num_calls"] == 1 and pool.num_queued == 4
        start = time.monotonic()
        got = collect([pool], timeout=5)  # wakes when the wait is over, not at the first result
        assert got == [] and time.monotonic() - start < 0.8
        assert pool.stats()["num_calls"] == 2 and pool.num_queued == 0  # second + third, one call
        got += drain(pool)
        expected = ScriptedVerifier(PROBLEMS, seed=7).score(first + second + third)
        assert sorted(got, key=lambda r: r.request_id) == expected
    finally:
        pool.shutdown()
        placement.remove()
