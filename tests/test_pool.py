"""ReplicaPool routing: least-loaded, prefix affinity, splitting, in-flight limits.

Routing happens at dispatch time, before anything runs, so these tests need no
Ray: the "actors" are recording stand-ins whose ``.generate.remote(batch)`` keeps
the batch and returns a token (what the pool stores as the call's ref). Results,
failures and real actors are covered in test_actors.py and test_fault.py.
"""

from __future__ import annotations

import itertools
import time

import pytest

from ponder.actors.pool import ReplicaPool
from ponder.actors.routing import problem_of
from ponder.search.messages import GenerateRequest

_ids = itertools.count()


class _RecordingMethod:
    def __init__(self, calls: list):
        self.calls = calls

    def remote(self, batch):
        token = object()
        self.calls.append(batch)
        return token


class RecordingHandle:
    """Stands in for an actor handle: records every generate call routed to it."""

    def __init__(self):
        self.calls: list[list[GenerateRequest]] = []
        self.generate = _RecordingMethod(self.calls)

    @property
    def request_ids(self) -> list[int]:
        return [r.request_id for batch in self.calls for r in batch]


def reqs(problem: str, k: int) -> list[GenerateRequest]:
    return [GenerateRequest(request_id=next(_ids), prefix="x", prefix_id=f"{problem}:{i}")
            for i in range(k)]


def make_pool(num_replicas: int = 2, **kwargs) -> tuple[ReplicaPool, list[RecordingHandle]]:
    handles = [RecordingHandle() for _ in range(num_replicas)]
    kwargs.setdefault("max_in_flight_batches", 100)
    return ReplicaPool(handles, "generate", **kwargs), handles


def test_problem_of_takes_the_part_before_the_last_colon():
    assert problem_of("game24:901:17") == "game24:901"
    assert problem_of("p:0") == "p"
    assert problem_of("plain") == "plain"
    assert problem_of("") is None


def test_batches_without_prefix_go_to_the_least_loaded_replica():
    pool, handles = make_pool(3)
    pool.dispatch([GenerateRequest(next(_ids), "x") for _ in range(5)])
    pool.dispatch([GenerateRequest(next(_ids), "x") for _ in range(2)])
    pool.dispatch([GenerateRequest(next(_ids), "x") for _ in range(3)])
    pool.dispatch([GenerateRequest(next(_ids), "x") for _ in range(1)])
    # 5 -> r0, 2 -> r1, 3 -> r2, then 1 -> r1 (2 is the least load)
    assert [len(h.request_ids) for h in handles] == [5, 3, 3]
    assert pool.loads() == [5, 3, 3]
    assert pool.num_in_flight == 11


def test_a_problem_sticks_to_its_replica_within_the_margin():
    pool, handles = make_pool(2, affinity_margin=4)
    first = reqs("a", 3)
    pool.dispatch(first)  # r0 gets a (3)
    pool.dispatch(reqs("b", 1))  # r1 is least loaded
    later = reqs("a", 2)
    pool.dispatch(later)  # r0 has 3, r1 has 1: 2 <= margin, so a stays on r0
    assert handles[0].request_ids == [r.request_id for r in first + later]
    assert pool.loads() == [5, 1]


def test_a_problem_moves_when_its_replica_is_overloaded_beyond_the_margin():
    pool, handles = make_pool(2, affinity_margin=4)
    pool.dispatch(reqs("a", 6))  # r0: 6
    pool.dispatch(reqs("b", 1))  # r1: 1
    moved = reqs("a", 2)
    pool.dispatch(moved)  # 6 - 1 = 5 > 4: a goes to the least-loaded r1
    assert handles[1].request_ids[-2:] == [r.request_id for r in moved]
    again = reqs("a", 1)
    pool.dispatch(again)  # a's home is now r1 (load 3, r0 6)
    assert handles[1].request_ids[-1] == again[0].request_id


def test_a_mixed_batch_goes_whole_to_the_home_of_most_of_its_requests():
    pool, handles = make_pool(2, affinity_margin=10)
    pool.dispatch(reqs("a", 2))  # a -> r0
    pool.dispatch(reqs("b", 2))  # b -> r1
    mixed = reqs("a", 1) + reqs("b", 1) + reqs("a", 1)
    pool.dispatch(mixed)
    assert len(handles[0].calls) == 2 and len(handles[1].calls) == 1  # one call, not split
    assert [r.request_id for r in handles[0].calls[-1]] == [r.request_id for r in mixed]
    later = reqs("b", 1)
    pool.dispatch(later)  # b was served by r0 last: its prefix is cached there now
    assert handles[0].calls[-1] == later


def test_batches_of_new_problems_spread_over_idle_replicas():
    pool, handles = make_pool(2)
    first, second = reqs("a", 2) + reqs("b", 2), reqs("c", 2) + reqs("d", 2)
    pool.dispatch(first)
    pool.dispatch(second)
    assert pool.loads() == [4, 4]
    assert [len(h.calls) for h in handles] == [1, 1]
    assert handles[0].calls[0] == first and handles[1].calls[0] == second


def test_batches_beyond_the_in_flight_limit_wait_in_the_pool():
    pool, handles = make_pool(2, max_in_flight_batches=1)
    assert pool.has_capacity()
    pool.dispatch(reqs("a", 2))
    assert pool.has_capacity()  # r1 is still free
    pool.dispatch(reqs("b", 2))
    assert not pool.has_capacity()
    pool.dispatch(reqs("c", 3))
    assert sum(len(h.calls) for h in handles) == 2
    assert pool.num_queued == 3 and pool.num_in_flight == 7


def test_a_busy_home_replica_does_not_hold_its_problem_back():
    pool, handles = make_pool(2, max_in_flight_batches=1, affinity_margin=100)
    pool.dispatch(reqs("a", 1))  # r0 busy with its one call
    follow = reqs("a", 1)
    pool.dispatch(follow)  # r0 has no free slot: r1 serves a now
    assert handles[1].request_ids == [follow[0].request_id]


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one actor"):
        ReplicaPool([], "generate")
    with pytest.raises(ValueError, match="max_in_flight_batches"):
        ReplicaPool([RecordingHandle()], "generate", max_in_flight_batches=0)


# -- under-full batches waiting for company (batch_wait_s) ------------------------------

def sent(handles: list[RecordingHandle]) -> list[list[int]]:
    """Request ids of every call, replica by replica, in the order they were sent."""
    return [[r.request_id for r in batch] for h in handles for batch in h.calls]


def ids(batch: list[GenerateRequest]) -> list[int]:
    return [r.request_id for r in batch]


def test_an_under_full_batch_waits_for_company_while_calls_are_in_flight():
    pool, handles = make_pool(1, max_batch_requests=4, batch_wait_s=60)
    a, b, c, d = reqs("a", 1), reqs("b", 1), reqs("c", 2), reqs("d", 1)
    pool.dispatch(a, tokens=10)  # nothing in flight: it goes at once, under-full or not
    pool.dispatch(b, tokens=10)  # a call is in flight: b waits for company
    assert sent(handles) == [ids(a)]
    assert pool.num_queued == 1 and pool.due() is not None
    assert pool.has_capacity()  # what the engine dispatches now joins the waiting batch
    pool.dispatch(c, tokens=20)  # 1 + 2 requests: still under 4, still waiting
    assert sent(handles) == [ids(a)] and pool.num_queued == 3
    pool.dispatch(d, tokens=10)  # full: the merged batch goes as one call
    assert sent(handles) == [ids(a), ids(b) + ids(c) + ids(d)]
    assert pool.num_queued == 0 and pool.due() is None
    assert pool.stats()["num_calls"] == 2 and pool.stats()["num_batches"] == 4


def test_a_waiting_batch_goes_when_its_wait_is_over():
    pool, handles = make_pool(1, max_batch_requests=4, batch_wait_s=0.02)
    pool.dispatch(reqs("a", 1), tokens=1)
    b = reqs("b", 1)
    pool.dispatch(b, tokens=1)
    due = pool.due()
    assert due is not None and pool.num_queued == 1
    time.sleep(max(0.0, due - time.monotonic()) + 0.005)
    assert pool.take(set()) == []  # what collect runs after its wait (bounded by due)
    assert sent(handles)[-1] == ids(b) and pool.due() is None


def test_batches_merge_only_within_the_batch_limits():
    pool, handles = make_pool(1, max_batch_requests=4, max_batch_tokens=100, batch_wait_s=60)
    pool.dispatch(reqs("a", 1), tokens=1)
    b, c, d = reqs("b", 1), reqs("c", 1), reqs("d", 3)
    pool.dispatch(b, tokens=60)
    pool.dispatch(c, tokens=60)  # 120 tokens together: b cannot wait for c, so b goes
    assert sent(handles)[-1] == ids(b)
    assert pool.num_queued == 1  # c now waits alone
    pool.dispatch(d, tokens=10)  # 1 + 3 requests: full
    assert sent(handles)[-1] == ids(c) + ids(d)


def test_nothing_waits_without_a_wait_or_without_token_counts():
    pool, handles = make_pool(1, max_batch_requests=4)  # batch_wait_s = 0
    pool.dispatch(reqs("a", 1), tokens=1)
    pool.dispatch(reqs("b", 1), tokens=1)
    assert len(sent(handles)) == 2
    pool, handles = make_pool(1, max_batch_requests=4, batch_wait_s=60)
    pool.dispatch(reqs("a", 1))
    pool.dispatch(reqs("b", 1))  # no token count: the pool cannot tell what merging costs
    assert len(sent(handles)) == 2 and pool.due() is None
