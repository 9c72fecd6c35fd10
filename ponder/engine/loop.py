"""The engine loop's two halves, shared by ``ponder solve`` (one job) and ``ponder serve`` (many).

    dispatch(runners, pools)            # schedule each job, send its batches
    results = pools.collect(timeout)    # whatever came back first
    deliver(runners, pools, results)    # each result to the job that asked for it

A runner is a ``ponder.engine.jobs.JobRunner``; pools are Ray replica pools or
in-process ones (``ponder.engine.pools.Pools``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ponder.engine.pools import Pools
from ponder.search.messages import Result

if TYPE_CHECKING:  # jobs imports nothing from here at run time; only the annotations need it
    from ponder.engine.jobs import JobRunner


def dispatch(runners: Sequence[JobRunner], pools: Pools) -> int:
    """Schedule every runner and send its batches to the pools, if a pool can take more.

    Returns:
        Requests dispatched.
    """
    all_pools = pools.all()
    idle = not any(pool.num_in_flight for pool in all_pools)
    if not (idle or any(pool.has_capacity() for pool in all_pools)):
        return 0
    sent = 0
    for runner in runners:
        plan = runner.schedule()
        if plan.score_batches and pools.verifier is None:
            raise ValueError(f"strategy {runner.config.search.strategy!r} asks a verifier to "
                             f"score paths, but the config has no verifier (set verifier.backend)")
        for batch, tokens in zip(plan.generate_batches, plan.generate_tokens, strict=True):
            pools.generator.dispatch(batch, tokens)
        for batch, tokens in zip(plan.score_batches, plan.score_tokens, strict=True):
            pools.verifier.dispatch(batch, tokens)
        sent += plan.num_requests
    return sent


def deliver(runners: Sequence[JobRunner], pools: Pools, results: list[Result]) -> None:
    """Route each result to the runner whose request it answers, and failed requests likewise."""
    mine: dict[int, list[Result]] = {}  # runner index -> its results
    for result in results:
        owner = next((i for i, r in enumerate(runners) if r.owns(result.request_id)), None)
        if owner is not None:  # a result of a job cancelled and gone is dropped
            mine.setdefault(owner, []).append(result)
    for index, runner in enumerate(runners):
        runner.update(mine.get(index, []))
    for pool in pools.all():
        failed = pool.pop_failed()
        reason = pool.last_error or "the backend raised on every attempt"
        for runner in runners:
            theirs = [r for r in failed if runner.owns(r.request_id)]
            if theirs:
                runner.fail(theirs, reason)
