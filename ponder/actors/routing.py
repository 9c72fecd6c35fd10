"""Which replica serves which request: least-loaded with prefix (problem) affinity.

Children of one tree node share a prefix, and a problem's later requests extend
prefixes it already sent, so a replica that served a problem likely still holds
its tree in the prefix cache (vLLM prefix caching, the embedded backend's cache).
``Router`` keeps each problem on its replica unless that replica is busier than
the least-loaded one by more than ``affinity_margin`` in-flight requests.
No Ray here: replicas are bookkeeping records around opaque actor handles.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ponder.search.messages import Request

MAX_AFFINITY_ENTRIES = 100_000  # problem ids remembered; the least recently routed go first


class Replica:
    """One actor of a pool and what it is doing."""

    __slots__ = ("index", "handle", "healthy", "retired", "num_requests", "num_batches",
                 "probe_after")

    def __init__(self, index: int, handle: Any):
        self.index = index
        self.handle = handle
        self.healthy = True  # False from a failed call until a liveness probe answers
        self.retired = False  # dead for good and not rebuilt
        self.num_requests = 0  # requests in flight: the load routing balances
        self.num_batches = 0  # calls in flight
        self.probe_after: float | None = None  # monotonic time to ping it next; None: no probe due


def problem_of(prefix_id: str) -> str | None:
    """The problem part of ``"problem:node"`` (the whole id if it has no node), None if empty."""
    if not prefix_id:
        return None
    head, sep, _ = prefix_id.rpartition(":")
    return head if sep else prefix_id


class Router:
    """Picks one replica for each batch: least-loaded, with prefix affinity.

    A batch goes whole to one replica. Every call costs a fixed overhead on top of
    its work (a Ray round trip, a forward pass over the batch), so splitting a batch
    over replicas buys little and, with many replicas, turns each batch into many
    tiny calls; the scheduler already sizes batches, and other batches keep the
    other replicas busy.

    Args:
        replicas: every replica of the pool, indexed by ``Replica.index``.
        affinity_margin: extra in-flight requests a batch's home replica may carry over
            the least-loaded one before the batch goes elsewhere.
    """

    def __init__(self, replicas: list[Replica], affinity_margin: int):
        self.replicas = replicas
        self.affinity_margin = affinity_margin
        self._home: OrderedDict[str, int] = OrderedDict()  # problem id -> replica index

    def route(self, batch: list[Request], free: list[Replica]) -> dict[Replica, list[Request]]:
        """Assign ``batch`` to one of the ``free`` replicas.

        Its home is the replica that last served most of its requests' problems;
        every problem of the batch then calls that replica home.

        Returns:
            replica -> the batch (one entry).
        """
        assert free, "route() needs at least one free replica"
        votes: dict[int, int] = {}  # replica index -> requests of the batch whose problem lives there
        problems = [problem_of(r.prefix_id) for r in batch]
        for problem in problems:
            home = self._home.get(problem)
            if home is not None:
                votes[home] = votes.get(home, 0) + 1
        home = max(votes, key=lambda i: (votes[i], -i)) if votes else None
        replica = self._choose(home, {r: r.num_requests for r in free})
        for problem in dict.fromkeys(problems):
            if problem is not None:
                self._remember(problem, replica.index)
        return {replica: list(batch)}

    def _choose(self, home_index: int | None, load: dict[Replica, int]) -> Replica:
        least = min(load, key=lambda r: (load[r], r.num_batches, r.index))
        if home_index is not None:
            home = self.replicas[home_index]
            if home in load and load[home] - load[least] <= self.affinity_margin:
                return home
        return least

    def _remember(self, problem: str, index: int) -> None:
        self._home[problem] = index
        self._home.move_to_end(problem)
        if len(self._home) > MAX_AFFINITY_ENTRIES:
            self._home.popitem(last=False)
