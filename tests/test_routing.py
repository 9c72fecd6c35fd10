"""Router: a batch goes whole to one replica, to its problems' home while that costs no balance.

Pure bookkeeping, no Ray: replicas are ``Replica`` records around dummy handles,
their loads set by hand as the pool would set them.
"""

from __future__ import annotations

import itertools

import pytest

from ponder.actors import routing
from ponder.actors.routing import Replica, Router
from ponder.search.messages import GenerateRequest

_ids = itertools.count()


def reqs(problem: str, k: int) -> list[GenerateRequest]:
    return [GenerateRequest(request_id=next(_ids), prefix="x", prefix_id=f"{problem}:{i}")
            for i in range(k)]


def router(num_replicas: int, affinity_margin: int = 16) -> tuple[Router, list[Replica]]:
    replicas = [Replica(i, object()) for i in range(num_replicas)]
    return Router(replicas, affinity_margin), replicas


def busy(replica: Replica, num_requests: int, num_batches: int = 1) -> None:
    replica.num_requests, replica.num_batches = num_requests, num_batches


def only(assignment: dict) -> tuple[Replica, list]:
    (replica, batch), = assignment.items()
    return replica, batch


def test_a_batch_of_many_problems_goes_whole_to_one_replica_in_order():
    r, replicas = router(16)
    batch = reqs("a", 3) + reqs("b", 2) + reqs("c", 1) + reqs("d", 2)
    replica, sent = only(r.route(batch, replicas))  # 16 idle replicas, 4 problems
    assert sent == batch and replica is replicas[0]


def test_a_batch_goes_to_the_home_of_most_of_its_requests_within_the_margin():
    r, replicas = router(3, affinity_margin=8)
    only(r.route(reqs("a", 2), replicas[:1]))  # a -> r0
    only(r.route(reqs("b", 2), replicas[1:2]))  # b -> r1
    busy(replicas[0], 6), busy(replicas[1], 2), busy(replicas[2], 1)
    replica, _ = only(r.route(reqs("b", 1) + reqs("a", 3), replicas))
    assert replica is replicas[0]  # 3 requests of a against 1 of b; 6 - 1 <= 8
    replica, _ = only(r.route(reqs("b", 1), replicas))
    assert replica is replicas[0]  # b came along: its latest prefixes are cached on r0


def test_beyond_the_margin_the_batch_goes_to_the_least_loaded_and_its_problems_move():
    r, replicas = router(2, affinity_margin=4)
    only(r.route(reqs("a", 2), replicas))  # a -> r0
    busy(replicas[0], 6), busy(replicas[1], 1)
    replica, _ = only(r.route(reqs("a", 2), replicas))
    assert replica is replicas[1]  # 6 - 1 > 4
    busy(replicas[0], 1), busy(replicas[1], 3)
    replica, _ = only(r.route(reqs("a", 1), replicas))
    assert replica is replicas[1]  # a's home is r1 now, and 3 - 1 <= 4


def test_an_idle_replica_beats_a_busy_home():
    r, replicas = router(2, affinity_margin=100)
    only(r.route(reqs("a", 2), replicas))  # a -> r0
    busy(replicas[0], 2)
    replica, _ = only(r.route(reqs("a", 2), replicas))
    assert replica is replicas[1]  # r0 has a call in flight, r1 none: use r1
    busy(replicas[1], 2)
    replica, _ = only(r.route(reqs("a", 1), replicas))
    assert replica is replicas[1]  # both busy: a stays on its new home


def test_only_free_replicas_are_candidates():
    r, replicas = router(3)
    only(r.route(reqs("a", 1), replicas))  # a -> r0
    replica, _ = only(r.route(reqs("a", 1), replicas[1:]))  # the pool found r0 full
    assert replica is replicas[1]
    with pytest.raises(AssertionError):
        r.route(reqs("a", 1), [])


def test_the_affinity_memory_forgets_the_least_recently_routed_problems(monkeypatch):
    monkeypatch.setattr(routing, "MAX_AFFINITY_ENTRIES", 2)
    r, replicas = router(2)
    only(r.route(reqs("a", 1), replicas[1:]))  # a -> r1
    only(r.route(reqs("b", 1), replicas[:1]))
    only(r.route(reqs("c", 1), replicas[:1]))  # a, the oldest, is forgotten
    busy(replicas[0], 1, 1), busy(replicas[1], 1, 1)
    replica, _ = only(r.route(reqs("a", 1), replicas))
    assert replica is replicas[0]  # no home any more: least loaded, lowest index
