"""Replicas of one model role: route batches to them, collect results, survive their failures.

The engine codes against this API (bookkeeping modelled on Ray's ``ActorPool``:
a plain class over actor handles; the actors stay thin)::

    pool.dispatch(batch)                       # never blocks, never refuses
    results = collect([gen_pool, ver_pool], timeout=0.05)   # one ray.wait over both
    failed = pool.pop_failed()                 # requests given up after max_attempts

``dispatch`` queues the batch and sends what fits at once: a replica takes at most
``max_in_flight_batches`` calls at a time; the rest waits in the pool (FIFO) and is
sent as calls return, during ``collect``. ``has_capacity()`` says whether a new batch
would be sent at once, so the engine can hold its scheduler back instead.

Routing (``routing.Router``). A batch goes whole to one replica: the home of most of
its problems (``prefix_id`` is ``"problem:node"``), the replica that served them last
and whose prefix cache holds their trees, unless that replica has no free slot or its
load (in-flight requests) exceeds the least-loaded free replica's by
``affinity_margin``; otherwise the least-loaded free replica. With ``packed`` (as
``build_pool`` makes pools) a call carries its batch as msgpack bytes
(``messages.pack``) to the actor's ``<method>_packed``, cheaper than pickling.

Waiting for company (``batch_wait_s``, off at 0). Every call costs a replica and the
driver a fixed overhead (Ray's CPU on either side; a GPU's pass over the weights),
so an under-full batch that would only queue behind a call in flight may wait up to
``batch_wait_s`` in the pool: batches dispatched meanwhile are merged into it, within
``max_batch_requests`` and ``max_batch_tokens`` (``dispatch`` is told each batch's
worst-case tokens; a batch without them never merges), and it goes when it is full,
when no call of the pool is in flight any more, or when its wait is over (``due``:
``collect`` wakes by then). Retries never merge: they are split on purpose.

Failures. Each request comes back exactly once, from ``collect``, or once from
``pop_failed``. A call that fails because its actor died or became unreachable
(``RayActorError``: ``ActorDiedError``, ``ActorUnavailableError``) puts its requests
back at the front of the queue and they go to healthy replicas; the failed replica
is probed with ``ping`` and takes work again once it answers (actors are created with
``max_restarts``). A replica that is dead for good is rebuilt by ``factory`` or, with
none, retired. A call that fails because the backend raised, or a second time for
any reason, is retried one request per call, so one bad request cannot sink its
batch mates; a request whose calls failed ``max_attempts`` times goes to
``pop_failed``, and ``last_error`` holds the last failure as one line.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayError, RayTaskError

from ponder.actors.routing import Replica, Router
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, Request, Result, pack, unpack

_PROBE_BACKOFF_S = 0.5  # wait before re-probing a replica that is still unreachable


class NoReplicasError(RuntimeError):
    """Every replica of a pool is dead for good and there is no factory to rebuild one."""


class _Queued:
    """A batch waiting in the pool for a free replica slot."""

    __slots__ = ("requests", "tokens", "since")

    def __init__(self, requests: list[Request], tokens: int | None, since: float):
        self.requests = requests
        # Worst-case tokens; None (unknown, and for retries, split on purpose): never merges.
        self.tokens = tokens
        self.since = since  # when it was queued (the oldest part, after merges)


class _Call:
    __slots__ = ("replica", "requests")

    def __init__(self, replica: Replica, requests: list[Request]):
        self.replica = replica
        self.requests = requests


class ReplicaPool:
    """Routes batches of one role's requests over its replicas (see the module docstring).

    Args:
        actors: handles of ready actors, all with the batch method ``method``.
        method: ``"generate"`` or ``"score"``.
        factory: ``factory(index) -> handle`` rebuilds replica ``index`` when it is dead
            for good; None retires it instead.
        max_in_flight_batches: calls in flight per replica at most.
        affinity_margin: extra in-flight requests a problem's replica may carry over
            the least-loaded one before the problem moves.
        max_attempts: failed calls a request may take part in before it is given up.
        name: for messages and stats.
        max_batch_requests, max_batch_tokens: the batch limits merged batches keep to
            (the scheduler's); None for requests means batches never merge.
        batch_wait_s: how long an under-full batch may wait for company (0: never).
        packed: call ``<method>_packed`` with batches in the wire format (``messages.pack``)
            instead of ``<method>`` with pickled lists: what the actors of ``build_pool`` do.
    """

    def __init__(self, actors: Sequence[Any], method: str,
                 factory: Callable[[int], Any] | None = None, max_in_flight_batches: int = 2,
                 affinity_margin: int = 16, max_attempts: int = 5, name: str = "",
                 max_batch_requests: int | None = None, max_batch_tokens: int | None = None,
                 batch_wait_s: float = 0.0, packed: bool = False):
        if not actors:
            raise ValueError(f"pool {name!r} needs at least one actor")
        if max_in_flight_batches < 1 or max_attempts < 1:
            raise ValueError(f"max_in_flight_batches and max_attempts must be >= 1, got "
                             f"{max_in_flight_batches} and {max_attempts}")
        self.name = name or method
        self.method = method
        self.packed = packed
        self.factory = factory
        self.max_in_flight_batches = max_in_flight_batches
        self.max_attempts = max_attempts
        self._replicas = [Replica(i, a) for i, a in enumerate(actors)]
        self.max_batch_requests = max_batch_requests
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait_s = batch_wait_s
        self._holding = False  # the queue's one batch waits for company (see _hold)
        self._queue: deque[_Queued] = deque()  # batches waiting for a free slot
        self._calls: dict[ray.ObjectRef, _Call] = {}  # call ref -> what it carries
        self._probes: dict[ray.ObjectRef, Replica] = {}  # ping ref -> the replica it probes
        self._router = Router(self._replicas, affinity_margin)
        self._outstanding: set[int] = set()  # request ids dispatched, not yet returned
        self._attempts: dict[int, int] = {}  # request id -> failed calls so far
        self._failed: list[Request] = []
        self.last_error = ""  # the last call failure (backend exception or actor death), one line
        self._counts = dict(num_batches=0, num_calls=0, num_results=0, num_failures=0,
                            num_redispatched=0, num_replaced=0, num_retired=0, num_given_up=0)

    # -- the engine's side ------------------------------------------------------------

    def dispatch(self, batch: list[Request], tokens: int | None = None) -> None:
        """Queue ``batch`` and send what fits now; results come back from ``collect``.

        ``tokens`` (the batch's worst-case tokens, as the scheduler packed it) lets a
        batch that waits in the queue take later ones in, up to the batch limits.
        """
        if not batch:
            return
        self._outstanding.update(r.request_id for r in batch)
        self._queue.append(_Queued(list(batch), tokens, time.monotonic()))
        self._counts["num_batches"] += 1
        self._pump()

    def poll(self, timeout: float = 0.0) -> list[Result]:
        """Results of this pool alone that finish within ``timeout`` seconds (see ``collect``)."""
        return collect([self], timeout)

    def pop_failed(self) -> list[Request]:
        """Requests given up since the last call (each failed ``max_attempts`` calls)."""
        failed, self._failed = self._failed, []
        return failed

    def has_capacity(self) -> bool:
        """True if a batch dispatched now would be sent at once (or join one waiting for company)."""
        return (not self._queue or self._holding) and any(self._free(r) for r in self._replicas)

    def model_spec(self) -> ModelSpec:
        """The served model's ModelSpec, asked of a live replica (blocks)."""
        live = [r for r in self._replicas if not r.retired]
        return ray.get(min(live, key=lambda r: not r.healthy).handle.model_spec.remote())

    def render_prompts(self, requests: list[GenerateRequest]) -> list[str] | None:
        """The text the model reads for each request, asked of a live replica (blocks); None
        when its backend reads prefixes as they are (``GeneratorActor.render_prompts``)."""
        live = [r for r in self._replicas if not r.retired]
        return ray.get(min(live, key=lambda r: not r.healthy).handle.render_prompts.remote(requests))

    def replica_info(self, timeout: float | None = 60.0) -> list[Any]:
        """Each live replica's ``ReplicaInfo`` (blocks; for status and tests)."""
        live = [r for r in self._replicas if not r.retired]
        return ray.get([r.handle.stats.remote() for r in live], timeout=timeout)

    @property
    def num_in_flight(self) -> int:
        """Requests dispatched (sent or queued) and not yet returned or given up."""
        return len(self._outstanding)

    @property
    def num_queued(self) -> int:
        """Requests waiting in the pool for a free replica slot."""
        return sum(len(q.requests) for q in self._queue)

    @property
    def num_replicas(self) -> int:
        """Replicas not retired (healthy or being probed)."""
        return sum(not r.retired for r in self._replicas)

    @property
    def actors(self) -> list[Any]:
        """Current actor handles, by replica index (retired ones included)."""
        return [r.handle for r in self._replicas]

    def loads(self) -> list[int]:
        """In-flight requests per replica, by replica index."""
        return [r.num_requests for r in self._replicas]

    def stats(self) -> dict[str, int]:
        """Counters: batches, calls, results, failures, re-dispatches, replacements, give-ups."""
        return dict(self._counts, num_in_flight=self.num_in_flight, num_queued=self.num_queued,
                    num_healthy=sum(r.healthy and not r.retired for r in self._replicas))

    def shutdown(self) -> None:
        """Kill every actor (no restart). Requests in flight are dropped."""
        for replica in self._replicas:
            ray.kill(replica.handle, no_restart=True)
        self._replicas.clear()
        self._calls.clear()
        self._probes.clear()
        self._queue.clear()
        self._outstanding.clear()

    # -- hooks for collect() --------------------------------------------------------

    def refs(self) -> list[ray.ObjectRef]:
        """What ``collect`` waits on: calls and liveness probes in flight."""
        self._start_due_probes()
        return [*self._calls, *self._probes]

    def take(self, ready: set[ray.ObjectRef]) -> list[Result]:
        """Handle the refs of this pool in ``ready``; return the results they carry."""
        results: list[Result] = []
        for ref in [r for r in self._probes if r in ready]:
            self._on_probe(ref, self._probes.pop(ref))
        for ref in [r for r in self._calls if r in ready]:
            results += self._on_call(ref, self._calls.pop(ref))
        self._pump()
        return results

    # -- routing ----------------------------------------------------------------------

    def _free(self, replica: Replica) -> bool:
        return (replica.healthy and not replica.retired
                and replica.num_batches < self.max_in_flight_batches)

    def due(self) -> float | None:
        """When a batch held back for company must go (``time.monotonic``), or None."""
        return self._queue[0].since + self.batch_wait_s if self._holding else None

    def _pump(self) -> None:
        """Send queued batches while some replica has a free slot."""
        self._holding = False
        while self._queue:
            free = [r for r in self._replicas if self._free(r)]
            if not free:
                if all(r.retired for r in self._replicas):
                    raise NoReplicasError(f"pool {self.name!r}: every replica is dead and none "
                                          f"can be rebuilt; last error: {self.last_error}")
                return
            self._merge_head()
            if self._hold():
                self._holding = True
                return
            batch = self._queue.popleft().requests
            for replica, requests in self._router.route(batch, free).items():
                self._send(replica, requests)

    def _merging(self) -> bool:
        return self.batch_wait_s > 0 and self.max_batch_requests is not None

    def _fits(self, head: _Queued, other: _Queued) -> bool:
        return (head.tokens is not None and other.tokens is not None
                and len(head.requests) + len(other.requests) <= self.max_batch_requests
                and (self.max_batch_tokens is None
                     or head.tokens + other.tokens <= self.max_batch_tokens))

    def _merge_head(self) -> None:
        """Fold the batches behind the queue's head into it while the batch limits allow."""
        if not self._merging():
            return
        head = self._queue[0]
        while len(self._queue) > 1 and self._fits(head, self._queue[1]):
            other = self._queue[1]
            del self._queue[1]
            head.requests += other.requests
            head.tokens += other.tokens

    def _hold(self) -> bool:
        """Whether the queue's head should wait for more requests instead of going now.

        Only a lone, under-full batch waits, for at most ``batch_wait_s``, and only while
        the pool has calls in flight: the replicas have work meanwhile, and the loop
        comes back here when one returns or the wait is over (``due``).
        """
        if not self._merging() or len(self._queue) != 1 or not self._calls:
            return False
        head = self._queue[0]
        return (head.tokens is not None and len(head.requests) < self.max_batch_requests
                and time.monotonic() - head.since < self.batch_wait_s)

    def _send(self, replica: Replica, requests: list[Request]) -> None:
        if self.packed:
            ref = getattr(replica.handle, self.method + "_packed").remote(pack(requests))
        else:
            ref = getattr(replica.handle, self.method).remote(requests)
        self._calls[ref] = _Call(replica, requests)
        replica.num_requests += len(requests)
        replica.num_batches += 1
        self._counts["num_calls"] += 1

    # -- results and failures ---------------------------------------------------------

    def _on_call(self, ref: ray.ObjectRef, call: _Call) -> list[Result]:
        call.replica.num_requests -= len(call.requests)
        call.replica.num_batches -= 1
        try:
            results = ray.get(ref)
            if self.packed:
                results = unpack(results)
        except RayTaskError as e:  # the backend raised: the replica itself is fine
            self._counts["num_failures"] += 1
            self.last_error = str(e).strip().splitlines()[-1]  # the backend's exception line
            self._retry(call.requests, isolate=True)
            return []
        except RayError as e:  # RayActorError mostly: the replica died or is unreachable
            self._counts["num_failures"] += 1
            self.last_error = f"replica {call.replica.index}: " + str(e).strip().splitlines()[0]
            self._mark_unhealthy(call.replica)
            self._retry(call.requests, isolate=False)
            return []
        fresh = [r for r in results if r.request_id in self._outstanding]
        for result in fresh:
            self._outstanding.discard(result.request_id)
            self._attempts.pop(result.request_id, None)
        self._counts["num_results"] += len(fresh)
        return fresh

    def _retry(self, requests: list[Request], isolate: bool) -> None:
        """Requeue at the front, or give up on requests out of attempts.

        A batch whose requests failed before goes back one request per call: if one
        of them crashes replicas, the others then stop sharing its fate.
        """
        retry = []
        for request in requests:
            attempts = self._attempts.get(request.request_id, 0) + 1
            self._attempts[request.request_id] = attempts
            isolate = isolate or attempts >= 2
            if attempts >= self.max_attempts:
                self._give_up(request)
            else:
                retry.append(request)
        self._counts["num_redispatched"] += len(retry)
        batches = [[r] for r in retry] if isolate else [retry] if retry else []
        now = time.monotonic()
        self._queue.extendleft(reversed([_Queued(b, None, now) for b in batches]))

    def _give_up(self, request: Request) -> None:
        self._outstanding.discard(request.request_id)
        self._attempts.pop(request.request_id, None)
        self._failed.append(request)
        self._counts["num_given_up"] += 1

    def _mark_unhealthy(self, replica: Replica) -> None:
        if replica.healthy and not replica.retired:
            replica.healthy = False
            replica.probe_after = time.monotonic()

    def _start_due_probes(self) -> None:
        now = time.monotonic()
        for replica in self._replicas:
            if replica.probe_after is not None and replica.probe_after <= now:
                replica.probe_after = None
                self._probes[replica.handle.ping.remote()] = replica

    def _on_probe(self, ref: ray.ObjectRef, replica: Replica) -> None:
        try:
            ray.get(ref)
        except ActorDiedError as e:  # dead for good: a ping to a restarting actor waits instead
            self.last_error = str(e).splitlines()[0]
            self._replace(replica, rebuild=not e.actor_init_failed)
            return
        except RayActorError:  # unreachable for now (network, restarting): ask again later
            replica.probe_after = time.monotonic() + _PROBE_BACKOFF_S
            return
        replica.healthy = True

    def _replace(self, replica: Replica, rebuild: bool) -> None:
        """A replica dead for good: rebuild it with the factory, or retire it.

        A replica whose constructor raised is retired: its twin would raise too.
        """
        ray.kill(replica.handle, no_restart=True)  # in case it was only half dead
        if self.factory is None or not rebuild:
            replica.retired = True
            self._counts["num_retired"] += 1
            return
        replica.handle = self.factory(replica.index)
        replica.probe_after = time.monotonic()  # healthy once its constructor has run
        self._counts["num_replaced"] += 1


def collect(pools: Sequence[Any], timeout: float | None = 0.0) -> list[Result]:
    """Wait up to ``timeout`` seconds for any call of any pool; return every result ready.

    One ``ray.wait`` covers every pool, so the engine keeps generator and verifier
    busy at once. Returns as soon as something finished (possibly only a liveness
    probe, so the list may be empty before the timeout) or a batch waiting for
    company must go (``ReplicaPool.due``); None waits indefinitely.

    Args:
        pools: ReplicaPools (None entries are skipped).
        timeout: seconds to wait for the first finished call.

    Returns:
        Results of any pools, in no particular order; each request's exactly once.

    Raises:
        NoReplicasError: a pool has work but no replica left to run it.
    """
    pools = [p for p in pools if p is not None]
    refs = [ref for pool in pools for ref in pool.refs()]
    if not refs:
        if timeout and any(pool.num_in_flight for pool in pools):
            time.sleep(min(timeout, _PROBE_BACKOFF_S / 10))  # waiting for a probe to fall due
        return []
    due = [d for d in (pool.due() for pool in pools) if d is not None]
    if due:  # a batch held back for company must go by then (+1 ms: ray.wait counts whole ms)
        left = max(0.0, min(due) - time.monotonic()) + 0.001
        timeout = left if timeout is None else min(timeout, left)
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    if ready:  # take everything else that is also done, without waiting
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    done = set(ready)
    results: list[Result] = []
    for pool in pools:
        results += pool.take(done)
    return results
