"""What the engine loop reports about its jobs and pools, at most every ``engine.metrics_interval_s``.

    metrics.job_started(runner)          # a runner was made: its counters start from here
    metrics.tick(runners, pools)         # every loop step: one clock read unless a report is due
    metrics.job_ended(runner, pools)     # the job's last figures, then it is forgotten

``JobMetrics`` is the observer the loops (``engine.run_loop``, ``EngineService``)
call; the base class reports nothing, which is what in-process jobs get.
``DeltaMetrics`` turns what the scheduler, the ledger and the pools already count
into counter increments (deltas since its last report) and gauge values, and
hands them to a ``MetricsSink``; ``ponder.cluster.metrics`` is the sink that
records Ray metrics (exported by every node's metrics agent as ``ray_<name>``,
counters with a ``_total`` suffix). ``METRICS`` is the catalogue both read.

A job is tagged ``job_id`` (its run directory's name; ``ponder serve``'s job id),
not ``job``: Prometheus keeps ``job`` for the scrape job and would rename ours.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ponder.engine.pools import Pools

if TYPE_CHECKING:  # jobs imports nothing from here; only the annotations need it
    from ponder.engine.jobs import JobRunner

JOB = ("job_id",)
JOB_ROLE = ("job_id", "role")
POOL = ("engine", "role")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its kind (``counter`` or ``gauge``), tag keys and help text."""

    kind: str
    tag_keys: tuple[str, ...]
    description: str


METRICS: dict[str, MetricSpec] = {  # metric name (before Ray's ray_ prefix) -> what it is
    "ponder_expansions": MetricSpec(
        "counter", JOB, "Samples asked of the generator (each generate request's n)"),
    "ponder_requests": MetricSpec("counter", JOB_ROLE, "Requests settled, by model role"),
    "ponder_generated_tokens": MetricSpec("counter", JOB, "Tokens the generator generated"),
    "ponder_scored_tokens": MetricSpec("counter", JOB, "Tokens the verifier read to score paths"),
    "ponder_prompt_tokens": MetricSpec(
        "counter", JOB_ROLE, "Prompt tokens of settled requests, prefix-cached ones included"),
    "ponder_cached_prompt_tokens": MetricSpec(
        "counter", JOB_ROLE, "Prompt tokens served from a prefix cache"),
    "ponder_flops": MetricSpec("counter", JOB_ROLE, "FLOPs spent (settled), by model role"),
    "ponder_problems_finished": MetricSpec("counter", JOB, "Problems with a written result"),
    "ponder_problems_solved": MetricSpec("counter", JOB, "Finished problems the task verified correct"),
    "ponder_problems_active": MetricSpec("gauge", JOB, "Problems still being searched"),
    "ponder_job_flops_spent": MetricSpec("gauge", JOB, "FLOPs the job has spent, against its cap"),
    "ponder_job_flops_reserved": MetricSpec(
        "gauge", JOB, "FLOPs reserved by the job's requests in flight"),
    "ponder_job_flops_cap": MetricSpec("gauge", JOB, "The job's FLOP cap (absent: uncapped)"),
    "ponder_problem_flops_cap": MetricSpec(
        "gauge", JOB, "The configured per-problem FLOP cap (absent: uncapped)"),
    "ponder_requests_in_flight": MetricSpec(
        "gauge", POOL, "Requests dispatched to a pool and not yet returned (queued ones too)"),
    "ponder_requests_queued": MetricSpec(
        "gauge", POOL, "Requests waiting in a pool for a free replica slot"),
    "ponder_replica_busy_seconds": MetricSpec(
        "counter", (*POOL, "replica"), "Seconds a replica spent inside backend calls"),
}


class MetricsSink(Protocol):
    """Where reported values go (Ray metrics; a list in tests)."""

    def count(self, name: str, value: float, tags: dict[str, str]) -> None:
        """Add ``value`` (> 0) to counter ``name``."""

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        """Set gauge ``name`` to ``value``."""


class JobMetrics:
    """The loop's metrics observer; this base reports nothing (in-process jobs, metrics off).

    Subclasses implement ``report`` and ``report_end``; the loop calls ``tick`` and
    ``job_ended``, which never raise: a failing metrics backend must not stop a search,
    so its first error is a warning and the rest are dropped.

    Args:
        interval_s: seconds between reports at most; 0 turns ``tick`` off.
    """

    def __init__(self, interval_s: float = 0.0):
        self.interval_s = interval_s
        self.last_error: str | None = None  # the first report that raised, one line
        self._next_report = 0.0  # time.monotonic() of the next report due

    def tick(self, runners: Sequence[JobRunner], pools: Pools) -> None:
        """Report if ``interval_s`` has passed since the last report; else only read the clock."""
        if not self.interval_s:
            return
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + self.interval_s
        self._guard(self.report, runners, pools)

    def job_started(self, runner: JobRunner) -> None:
        """``runner`` was just made: count its work from now (a resumed job's earlier work is not)."""

    def job_ended(self, runner: JobRunner, pools: Pools) -> None:
        """Report ``runner``'s last figures and forget it."""
        self._guard(self.report_end, runner, pools)

    def report(self, runners: Sequence[JobRunner], pools: Pools) -> None:
        """Report every runner's and every pool's figures now (may raise)."""

    def report_end(self, runner: JobRunner, pools: Pools) -> None:
        """Report a job that ended (may raise)."""

    def _guard(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as e:  # noqa: BLE001 -- metrics are never worth a job
            if self.last_error is None:
                self.last_error = f"{type(e).__name__}: {e}"
                warnings.warn(f"ponder metrics: a report failed ({self.last_error}); "
                              f"later failures are not shown", RuntimeWarning, stacklevel=3)


NO_METRICS = JobMetrics()


@dataclass(slots=True)
class JobCounts:
    """A job's running totals, as counters report them (FLOPs by model, tokens, problems)."""

    expansions: int = 0
    generate_requests: int = 0
    score_requests: int = 0
    generated_tokens: int = 0
    scored_tokens: int = 0
    generator_prompt_tokens: int = 0
    generator_cached_tokens: int = 0
    verifier_cached_tokens: int = 0
    generator_flops: int = 0
    verifier_flops: int = 0
    problems_finished: int = 0
    problems_solved: int = 0

    @classmethod
    def of(cls, runner: JobRunner) -> "JobCounts":
        """The runner's totals now: the scheduler's settled requests, the ledger, finished lines."""
        stats = runner.scheduler.totals
        spent = runner.budget.spent_by_model()
        return cls(
            expansions=stats.num_samples, generate_requests=stats.num_generate_requests,
            score_requests=stats.num_score_requests, generated_tokens=stats.generator_generated_tokens,
            scored_tokens=stats.verifier_prompt_tokens,
            generator_prompt_tokens=stats.generator_prompt_tokens,
            generator_cached_tokens=stats.generator_cached_tokens,
            verifier_cached_tokens=stats.verifier_cached_tokens,
            generator_flops=spent["generator"], verifier_flops=spent["verifier"],
            problems_finished=runner.num_finished, problems_solved=runner.totals.num_solved)

    def minus(self, other: "JobCounts") -> "JobCounts":
        """Field-wise ``self - other``: what grew since ``other`` was taken."""
        return JobCounts(*(a - b for a, b in zip(astuple(self), astuple(other))))


# counter name -> (role tag or None, JobCounts field): how a JobCounts delta is reported
_COUNTERS: tuple[tuple[str, str | None, str], ...] = (
    ("ponder_expansions", None, "expansions"),
    ("ponder_requests", "generator", "generate_requests"),
    ("ponder_requests", "verifier", "score_requests"),
    ("ponder_generated_tokens", None, "generated_tokens"),
    ("ponder_scored_tokens", None, "scored_tokens"),
    ("ponder_prompt_tokens", "generator", "generator_prompt_tokens"),
    ("ponder_prompt_tokens", "verifier", "scored_tokens"),
    ("ponder_cached_prompt_tokens", "generator", "generator_cached_tokens"),
    ("ponder_cached_prompt_tokens", "verifier", "verifier_cached_tokens"),
    ("ponder_flops", "generator", "generator_flops"),
    ("ponder_flops", "verifier", "verifier_flops"),
    ("ponder_problems_finished", None, "problems_finished"),
    ("ponder_problems_solved", None, "problems_solved"),
)
assert {f for _, _, f in _COUNTERS} == {f.name for f in fields(JobCounts)}


def job_id_of(runner: JobRunner) -> str:
    """A job's ``job_id`` tag: its run directory's name."""
    return runner.out_dir.name


class DeltaMetrics(JobMetrics):
    """Reports counters as increments since the last report, gauges as they are, to ``sink``.

    Args:
        sink: where the values go.
        interval_s: seconds between reports at most (0: only ``job_ended`` reports).
        engine: the ``engine`` tag of pool metrics; None: the job id of the one runner the
            loop steps (``ponder solve``: the pools are that job's).
    """

    def __init__(self, sink: MetricsSink, interval_s: float, engine: str | None = None):
        super().__init__(interval_s)
        self.sink = sink
        self.engine = engine
        self._last: dict[JobRunner, JobCounts] = {}  # runner -> its counts at the last report

    def job_started(self, runner: JobRunner) -> None:
        self._last[runner] = JobCounts.of(runner)

    def report(self, runners: Sequence[JobRunner], pools: Pools) -> None:
        for runner in runners:
            self._report_job(runner)
        self._report_pools(runners, pools)

    def report_end(self, runner: JobRunner, pools: Pools) -> None:
        self._report_job(runner)
        self._report_pools([runner], pools)
        self._last.pop(runner, None)

    def _report_job(self, runner: JobRunner) -> None:
        tags = {"job_id": job_id_of(runner)}
        now = JobCounts.of(runner)
        # A runner never announced counts from its first report (nothing is counted twice).
        delta = now.minus(self._last.get(runner, now))
        self._last[runner] = now
        for name, role, field in _COUNTERS:
            value = getattr(delta, field)
            if value > 0:
                self.sink.count(name, value, tags if role is None else {**tags, "role": role})
        budget = runner.budget
        self.sink.gauge("ponder_problems_active", len(runner.active), tags)
        self.sink.gauge("ponder_job_flops_spent", budget.job_spent, tags)
        self.sink.gauge("ponder_job_flops_reserved", budget.job_reserved, tags)
        if budget.flops_total is not None:
            self.sink.gauge("ponder_job_flops_cap", budget.flops_total, tags)
        if budget.flops_per_problem is not None:
            self.sink.gauge("ponder_problem_flops_cap", budget.flops_per_problem, tags)

    def _report_pools(self, runners: Sequence[JobRunner], pools: Pools) -> None:
        engine = self.engine_tag(runners)
        for role, pool in (("generator", pools.generator), ("verifier", pools.verifier)):
            if pool is None:
                continue
            tags = {"engine": engine, "role": role}
            self.sink.gauge("ponder_requests_in_flight", pool.num_in_flight, tags)
            self.sink.gauge("ponder_requests_queued", pool.num_queued, tags)

    def engine_tag(self, runners: Sequence[JobRunner]) -> str:
        """The ``engine`` tag of pool metrics (see the class docstring)."""
        if self.engine is not None:
            return self.engine
        return job_id_of(runners[0]) if len(runners) == 1 else "engine"
