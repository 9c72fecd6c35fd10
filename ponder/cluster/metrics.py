"""The engine's metrics as Ray metrics: what ``ponder.engine.metrics`` reports, recorded with ``ray.util.metrics``.

Every process that records a Ray metric (the ``ponder solve`` driver, the
``ponder serve`` engine actor) hands it to its node's metrics agent, which serves
Prometheus text at ``http://<node>:<metrics export port>/metrics``: a metric
``ponder_flops`` appears as the counter ``ray_ponder_flops_total``, a gauge
``ponder_job_flops_spent`` as ``ray_ponder_job_flops_spent``, with Ray's own tags
(``SessionName``, ``NodeAddress``, ``WorkerId``...) beside ours. The agent
exports every few seconds, so a scrape lags the engine by that much.

Replica busy time comes from each actor's own ``stats()`` (seconds inside backend
calls), asked once a report and read at a later one, so the loop never waits on it.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray
from ray.exceptions import RayError
from ray.util.metrics import Counter, Gauge

from ponder.actors.pool import ReplicaPool
from ponder.engine.jobs import JobRunner
from ponder.engine.metrics import METRICS, DeltaMetrics
from ponder.engine.pools import Pools

_RAY_METRICS: dict[str, Counter | Gauge] = {}  # metric name -> its Ray metric, made once a process


class RaySink:
    """A ``MetricsSink`` that records Ray metrics (``METRICS`` names and tag keys)."""

    def count(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric(name).inc(value, tags=tags)

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        _metric(name).set(value, tags=tags)


def _metric(name: str) -> Counter | Gauge:
    metric = _RAY_METRICS.get(name)
    if metric is None:
        spec = METRICS[name]
        kind = Counter if spec.kind == "counter" else Gauge
        metric = _RAY_METRICS[name] = kind(name, spec.description, tag_keys=spec.tag_keys)
    return metric


class _BusyProbe:
    """One replica's ``stats()`` call in flight, and the busy seconds counted so far."""

    __slots__ = ("ref", "pid", "busy_s")

    def __init__(self) -> None:
        self.ref: Any = None  # ObjectRef of the stats() call not read yet, or None
        self.pid = -1  # the process the busy seconds were counted in (a restart starts over)
        self.busy_s = 0.0


class RayJobMetrics(DeltaMetrics):
    """``DeltaMetrics`` into Ray metrics, plus each Ray replica's busy seconds.

    Args:
        interval_s: seconds between reports at most (``engine.metrics_interval_s``).
        engine: the ``engine`` tag of pool and replica metrics (see ``DeltaMetrics``).
    """

    def __init__(self, interval_s: float, engine: str | None = None):
        super().__init__(RaySink(), interval_s, engine)
        self._probes: dict[tuple[str, int], _BusyProbe] = {}  # (role, replica index) -> its probe

    def report(self, runners: Sequence[JobRunner], pools: Pools) -> None:
        super().report(runners, pools)
        engine = self.engine_tag(runners)
        for role, pool in (("generator", pools.generator), ("verifier", pools.verifier)):
            if isinstance(pool, ReplicaPool):
                self._report_busy(engine, role, pool)

    def _report_busy(self, engine: str, role: str, pool: ReplicaPool) -> None:
        probes = [(index, self._probes.setdefault((role, index), _BusyProbe()), actor)
                  for index, actor in enumerate(pool.actors)]
        asked = [p.ref for _, p, _ in probes if p.ref is not None]
        ready = set(ray.wait(asked, num_returns=len(asked), timeout=0)[0]) if asked else set()
        for index, probe, actor in probes:
            if probe.ref is not None and probe.ref not in ready:
                continue  # the replica is still busy with earlier calls: read it next time
            if probe.ref is not None:
                self._count_busy(engine, role, index, probe)
            probe.ref = actor.stats.remote()

    def _count_busy(self, engine: str, role: str, index: int, probe: _BusyProbe) -> None:
        ref, probe.ref = probe.ref, None
        try:
            info = ray.get(ref, timeout=0)
        except RayError:  # the replica died or was retired: its pool deals with that
            return
        if info.pid != probe.pid:  # a new process (a restart) counts from zero
            probe.pid, probe.busy_s = info.pid, 0.0
        delta = info.busy_s - probe.busy_s
        probe.busy_s = info.busy_s
        if delta > 0:
            self.sink.count("ponder_replica_busy_seconds", delta,
                            {"engine": engine, "role": role, "replica": str(index)})

