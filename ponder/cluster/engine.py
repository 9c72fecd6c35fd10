"""The engine loop: the one place that dispatches the scheduler's batches to model replicas.

    plan = scheduler.schedule()            # only while some pool can take more
    dispatch every batch to its pool       # never waits for a batch to come back
    results = collect(pools)               # whatever finished first, from either pool
    scheduler.update(results)              # trees advance as their own results arrive
    write the problems that finished

Generator and verifier replicas work at the same time, and no tree waits for a
lockstep batch. Pools bound the batches in flight per replica and queue the rest.

The loop runs against either Ray replica pools (``ponder.actors``) or in-process
pools that call backends directly (``ray.mode: inprocess``, or ``run_inprocess``),
which tests and the engine-overhead benchmark use; the loop is the same code.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict
from functools import partial
from typing import Any, Callable, Sequence

from ponder.cluster.inprocess import InProcessPool, InProcessPools, build_inprocess_pools
from ponder.cluster.progress import Progress
from ponder.cluster.results import ProblemRecord, ResultWriter, TokenCounts, make_summary
from ponder.config import Config
from ponder.search.budget import BudgetManager
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, Request, Result
from ponder.search.scheduler import Scheduler
from ponder.search.strategies.base import Answer, JobContext
from ponder.search.tree import Tree
from ponder.tasks.base import Problem, Task

COLLECT_TIMEOUT_S = 1.0  # collect returns as soon as one batch is back; this only bounds idling
NO_VERIFIER = ModelSpec(name="none", num_params=0, num_layers=0, d_model=0)


class EngineError(RuntimeError):
    """The job cannot go on (a request nobody can serve, the scheduler stuck)."""


def token_bound(slack: int, text: str) -> int:
    """One token per UTF-8 byte plus ``slack`` specials: an upper bound for char and byte-BPE tokenizers."""
    return len(text.encode("utf-8")) + slack


def problem_seed(job_seed: int, index: int) -> int:
    """The seed of problem ``index``'s strategy: distinct per problem, reproducible per job seed."""
    return (job_seed * 1_000_003 + index) % 2**31


# -- Ray pools ------------------------------------------------------------------------

class RayPools:
    """``ponder.actors`` replica pools, with the ``collect`` and ``shutdown`` the loop calls.

    Args:
        pools: what ``ponder.actors.build_pools`` returned.
        runtime: the Ray connection to end at shutdown; None leaves Ray running (the
            caller's, e.g. a test fixture's or a notebook's).
    """

    def __init__(self, pools: Any, runtime: Any = None):
        from ponder.actors import collect

        self._pools = pools
        self._collect = collect
        self._runtime = runtime
        self.generator = pools.generator
        self.verifier = pools.verifier

    def all(self) -> list[Any]:
        return self._pools.all()

    def collect(self, timeout: float) -> list[Result]:
        return self._collect(self._pools.all(), timeout=timeout)

    def shutdown(self) -> None:
        try:
            self._pools.shutdown()
        finally:
            if self._runtime is not None:
                self._runtime.shutdown()


def build_ray_pools(config: Config, connect_ray: bool = True) -> RayPools:
    """Create the replica pools ``config`` names, connecting to (or starting) Ray first.

    Args:
        config: the job config (``generator``, ``verifier``, ``engine``, ``ray``).
        connect_ray: False when this process is already connected to Ray; then
            shutting the pools down leaves Ray running.
    """
    from ponder.cluster.pools import build_pools

    runtime = None
    if connect_ray:
        from ponder.cluster.runtime import connect

        runtime = connect(config.ray)
    try:
        pools = build_pools(config.generator, config.verifier,
                            max_in_flight_batches=config.engine.max_in_flight_batches)
    except BaseException:
        if runtime is not None:
            runtime.shutdown()
        raise
    return RayPools(pools, runtime)


# -- one job ---------------------------------------------------------------------------

class _Job:
    """One run of the loop over a list of problems, writing as problems finish."""

    def __init__(self, config: Config, task: Task, problems: Sequence[Problem], pools: Any,
                 writer: ResultWriter, progress: Progress, next_request_id: Callable[[], int]):
        from ponder.search import get_strategy

        self.config, self.task, self.pools = config, task, pools
        self.writer, self.progress = writer, progress
        self.problems = _index(problems)  # problem_id -> Problem
        self.errors: dict[str, str] = {}  # problem_id -> why its requests failed
        self.budget = BudgetManager(config.budget.flops_total, config.budget.flops_per_problem)
        verifier_spec = pools.verifier.model_spec() if pools.verifier is not None else NO_VERIFIER
        self.scheduler = Scheduler(
            self.budget, pools.generator.model_spec(), verifier_spec,
            max_batch_requests=config.engine.max_batch_requests,
            max_batch_tokens=config.engine.max_batch_tokens,
            token_bound=partial(token_bound, config.budget.token_bound_slack))
        cls = get_strategy(config.search.strategy)
        params = cls.Params.from_dict(config.search.params)
        context = JobContext(budget=self.budget)
        for index, problem in enumerate(problems):
            tree = Tree(problem.problem_id, task.prompt(problem), task.step_delimiter)
            self.scheduler.add(cls(tree, task, params, problem_seed(config.search.seed, index),
                                   next_request_id, context))

    def run(self) -> None:
        """Grow every tree until each problem has an answer."""
        scheduler, pools = self.scheduler, self.pools
        while scheduler.has_work:
            idle = not any(pool.num_in_flight for pool in pools.all())
            if idle or any(pool.has_capacity() for pool in pools.all()):
                self._dispatch(scheduler.schedule())
            self._finish(scheduler.pop_finished())
            if not scheduler.has_work:
                break
            if idle and not any(pool.num_in_flight for pool in pools.all()):
                raise EngineError(f"{scheduler.num_active} problems are unfinished but none has "
                                  f"a request to run (a strategy waits for nothing)")
            results = pools.collect(COLLECT_TIMEOUT_S)
            if results:
                scheduler.update(results)
            self._cancel_failed()
            self._finish(scheduler.pop_finished())
        self._drain()

    def _dispatch(self, plan) -> None:
        for batch in plan.generate_batches:
            self.pools.generator.dispatch(batch)
        if plan.score_batches and self.pools.verifier is None:
            raise EngineError(f"strategy {self.config.search.strategy!r} asks a verifier to score "
                              f"paths, but the config has no verifier (set verifier.backend)")
        for batch in plan.score_batches:
            self.pools.verifier.dispatch(batch)

    def _cancel_failed(self) -> None:
        """Stop problems whose requests failed on every attempt; their lines say why."""
        for pool in self.pools.all():
            for request in pool.pop_failed():
                problem_id = _problem_of(request)
                reason = getattr(pool, "last_error", None) or "the backend raised on every attempt"
                self.errors.setdefault(problem_id, f"{_role(request)} request failed: {reason}")
                self.scheduler.cancel(problem_id)

    def _drain(self) -> None:
        # Requests of cancelled problems may still be out; take them back so the pools
        # are empty for the next job (their results are dropped by the scheduler).
        deadline = time.monotonic() + 30.0
        while any(pool.num_in_flight for pool in self.pools.all()) and time.monotonic() < deadline:
            self.scheduler.update(self.pools.collect(COLLECT_TIMEOUT_S))
            for pool in self.pools.all():
                pool.pop_failed()

    def _finish(self, answers: list[Answer]) -> None:
        for answer in answers:
            record = self._record(answer)
            self.writer.write(record)
            self.progress.update(1, int(bool(record.correct)), int(record.correct is not None),
                                 flops=self.budget.job_spent)

    def _record(self, answer: Answer) -> ProblemRecord:
        problem = self.problems[answer.problem_id]
        stats = answer.extra.get("stats", {})
        tokens = {
            "generator": TokenCounts(stats.get("generator_prompt_tokens", 0),
                                     stats.get("generator_cached_tokens", 0),
                                     stats.get("generator_generated_tokens", 0)),
            "verifier": TokenCounts(stats.get("verifier_prompt_tokens", 0),
                                    stats.get("verifier_cached_tokens", 0), 0),
        }
        problem_id = answer.problem_id
        return ProblemRecord(
            id=problem_id, problem=problem.problem, answer=answer.answer, trace=list(answer.trace),
            correct=self.task.verify(problem, answer.answer), score=answer.score,
            flops=self.budget.spent(problem_id), budget_flops=self.budget.cap(problem_id),
            flops_by_model=self.budget.spent_by_model(problem_id),
            stop_reason="error" if problem_id in self.errors else answer.stop_reason,
            tokens=tokens, num_nodes=answer.num_nodes, reference=problem.reference,
            error=self.errors.get(problem_id))


def _index(problems: Sequence[Problem]) -> dict[str, Problem]:
    by_id: dict[str, Problem] = {}  # problem_id -> Problem
    for problem in problems:
        if problem.problem_id in by_id:
            raise ValueError(f"problem id {problem.problem_id!r} appears twice; ids must be unique")
        by_id[problem.problem_id] = problem
    return by_id


def _role(request: Request) -> str:
    return "generator" if isinstance(request, GenerateRequest) else "verifier"


def _problem_of(request: Request) -> str:
    # Strategies name every request's node as "problem_id:node_id" (Tree.prefix_id).
    return request.prefix_id.rpartition(":")[0]


# -- public API --------------------------------------------------------------------------

class Engine:
    """Runs search jobs on one set of replica pools, built on the first job and kept until ``close``.

    Args:
        config: a validated Config (``ponder.config.load_config``).
        task: the task object; default: ``config.task``.
        pools: pools to run on instead of building them from config (e.g. InProcessPools
            around backend objects); the caller keeps ownership of them.
    """

    def __init__(self, config: Config, task: Task | None = None, pools: Any = None):
        self.config = config
        self.task = task if task is not None else make_task(config)
        self._pools = pools
        self._owns_pools = pools is None
        self._request_ids = itertools.count()  # unique over every job of this engine
        self.setup_seconds = 0.0

    def pools(self) -> Any:
        """The pools, built now if needed (Ray: connects and starts the actors)."""
        if self._pools is None:
            start = time.monotonic()
            if self.config.ray.mode == "inprocess":
                self._pools = build_inprocess_pools(self.config.generator, self.config.verifier)
            else:
                self._pools = build_ray_pools(self.config)
            self.setup_seconds = time.monotonic() - start
        return self._pools

    def run(self, problems: Sequence[Problem], out_dir: str | os.PathLike,
            progress: bool = True) -> dict[str, Any]:
        """Solve ``problems``; write ``results.jsonl``, ``summary.json`` and ``config.yaml`` to ``out_dir``.

        Returns:
            The summary (also in ``summary.json``). If interrupted, the summary of the
            problems finished so far is still written before the exception propagates.

        Raises:
            ValueError: duplicate problem ids. EngineError: the job cannot go on.
        """
        config = self.config
        pools = self.pools()  # before the run directory: a model that fails to load leaves none
        with ResultWriter(out_dir) as writer:
            writer.write_config(config.to_dict())
            mode = config.output.progress if progress else "off"
            start = time.monotonic()
            with Progress(len(problems), mode, config.output.progress_interval_s) as bar:
                job = _Job(config, self.task, problems, pools, writer, bar, self._request_ids.__next__)
                try:
                    job.run()
                finally:
                    summary = self._summary(job, writer, time.monotonic() - start, len(problems))
                    writer.write_summary(summary)
        return summary

    def _summary(self, job: _Job, writer: ResultWriter, wall: float, num_requested: int) -> dict:
        config = self.config
        summary = make_summary(
            writer.totals, total_flops=job.budget.job_spent,
            flops_by_model=job.budget.spent_by_model(), wall_seconds=wall,
            strategy=config.search.strategy, strategy_params=config.search.params,
            budget=asdict(config.budget), task=getattr(self.task, "name", "") or config.task.name,
            num_requested=num_requested)
        summary["num_failed"] = len(job.errors)
        summary["setup_seconds"] = round(self.setup_seconds, 3)
        summary["models"] = {"generator": asdict(job.scheduler.generator_spec),
                             "verifier": asdict(job.scheduler.verifier_spec)}
        return summary

    def close(self) -> None:
        """Shut the pools (and a Ray this engine started) down, if the engine built them."""
        if self._owns_pools and self._pools is not None:
            self._pools.shutdown()
        self._pools = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_task(config: Config) -> Task:
    """The task object ``config.task`` names."""
    from ponder.tasks import get_task

    return get_task(config.task.name, **config.task.kwargs)


def run_job(config: Config, problems: Sequence[Problem], out_dir: str | os.PathLike,
            progress: bool = True, task: Task | None = None) -> dict[str, Any]:
    """Solve ``problems`` with the pools ``config`` describes (Ray, or in-process), then shut down.

    Args:
        config: a validated Config.
        problems: the problems, with unique ids.
        out_dir: the run directory for results.jsonl, summary.json and config.yaml.
        progress: show progress as ``config.output.progress`` says; False shows none.
        task: the task object (default: built from ``config.task``).

    Returns:
        The summary dict written to ``summary.json``.
    """
    with Engine(config, task) as engine:
        return engine.run(problems, out_dir, progress)


def run_inprocess(config: Config, problems: Sequence[Problem], out_dir: str | os.PathLike,
                  generator: Any, verifier: Any = None, task: Task | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """``run_job`` on backend objects called in this process: no Ray, no actors.

    Args:
        generator: a GeneratorBackend instance.
        verifier: a VerifierBackend instance, or None for strategies that never score.
        (the rest as in ``run_job``)
    """
    pools = InProcessPools(InProcessPool(generator, "generator"),
                           None if verifier is None else InProcessPool(verifier, "verifier"))
    with Engine(config, task, pools=pools) as engine:
        return engine.run(problems, out_dir, progress)
