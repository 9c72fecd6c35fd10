"""The engine loop: the one place that dispatches the scheduler's batches to model replicas.

    plan = runner.schedule()               # only while some pool can take more
    dispatch every batch to its pool       # never waits for a batch to come back
    results = collect(pools)               # whatever finished first, from either pool
    runner.update(results)                 # trees advance as their own results arrive;
                                           # finished problems are written at once

Generator and verifier replicas work at the same time, and no tree waits for a
lockstep batch. Pools bound the batches in flight per replica and queue the rest.

The loop runs against either Ray replica pools (``ponder.actors``) or in-process
pools that call backends directly (``ray.mode: inprocess``, or ``run_inprocess``),
which tests and the engine-overhead benchmark use; the loop is the same code.
A ``ponder.engine.jobs.JobRunner`` holds the job (scheduler, ledger, run directory,
checkpoints), so ``ponder solve`` and ``ponder serve`` share the loop's two halves.
"""

from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Iterator, Sequence

from ponder.engine.checkpoint import RequestIds
from ponder.engine.inprocess import InProcessPool, InProcessPools, build_inprocess_pools
from ponder.engine.jobs import JobRunner, problem_seed
from ponder.engine.loop import deliver, dispatch
from ponder.engine.metrics import NO_METRICS, JobMetrics
from ponder.engine.pools import Pools, model_specs, rendered_root_prompts
from ponder.engine.progress import Progress
from ponder.config import Config
from ponder.tasks import task_from_config
from ponder.tasks.base import Problem, Task

__all__ = ["Engine", "EngineError", "problem_seed",
           "run_inprocess", "run_job", "run_loop"]

COLLECT_TIMEOUT_S = 1.0  # collect returns as soon as one batch is back; this only bounds idling
DRAIN_TIMEOUT_S = 30.0  # how long a finished job waits for requests of its cancelled problems
YOUNG_GC_THRESHOLD = 10_000  # allocations between young collections in a job (CPython: 700)


class EngineError(RuntimeError):
    """The job cannot go on (a request nobody can serve, the scheduler stuck)."""


# -- one job ---------------------------------------------------------------------------

def run_loop(runner: JobRunner, pools: Pools, metrics: JobMetrics = NO_METRICS) -> None:
    """Step ``runner`` until every problem has an answer: the loop of ``ponder solve``.

    ``dispatch`` and ``deliver`` (``ponder.engine.loop``) are the two halves that
    ``ponder serve`` runs for many jobs at once; this is the same loop for one.
    ``metrics`` is told about every step and reports when its interval is due.

    Raises:
        EngineError: problems remain but none has a request to run.
        ValueError: a strategy asks for scores and the job has no verifier.
    """
    while runner.has_work:
        idle = not any(pool.num_in_flight for pool in pools.all())
        dispatch([runner], pools)
        if not runner.has_work:
            break
        if idle and not any(pool.num_in_flight for pool in pools.all()):
            raise EngineError(f"{len(runner.active)} problems are unfinished but none has "
                              f"a request to run (a strategy waits for nothing)")
        deliver([runner], pools, pools.collect(COLLECT_TIMEOUT_S))
        metrics.tick([runner], pools)
    # Requests of cancelled problems may still be out; take them back so the pools are
    # empty for the engine's next job (the runner drops their results).
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while any(pool.num_in_flight for pool in pools.all()) and time.monotonic() < deadline:
        deliver([runner], pools, pools.collect(COLLECT_TIMEOUT_S))


@contextmanager
def job_gc() -> Iterator[None]:
    """Garbage collection set for one job while the block runs; the caller's settings after.

    A job allocates hundreds of thousands of small objects, its trees, that live as long as
    their problem. Under CPython's defaults (a young collection every 700 allocations, a full
    one whenever the heap has grown by a quarter) full collections keep walking the whole
    heap (Ray, every module, the job), each longer than the calls in flight keep a replica
    busy, and the driver's CPU goes to collecting instead of dispatching. So
    ``gc.freeze`` parks what is alive at the job's start (Ray, the modules, the pools: they
    outlive the job) where no collection walks it, and a young collection waits for
    ``YOUNG_GC_THRESHOLD`` allocations: a full one then comes at most every million
    (CPython runs one after 10 middle ones, each after 10 young ones).
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], YOUNG_GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


# -- public API --------------------------------------------------------------------------

class Engine:
    """Runs search jobs on one set of replica pools, built on the first job and kept until ``close``.

    Args:
        config: a validated Config (``ponder.config.load_config``).
        task: the task object; default: ``config.task``.
        pools: pools to run on instead of building them from config (e.g. InProcessPools
            around backend objects); the caller keeps ownership of them.
        metrics: what each job reports to; default: Ray metrics every
            ``engine.metrics_interval_s`` (``ponder.cluster.metrics``) unless ``ray.mode``
            is ``inprocess`` or the interval is 0, then none.
    """

    def __init__(self, config: Config, task: Task | None = None, pools: Pools | None = None,
                 metrics: JobMetrics | None = None):
        self.config = config
        self.task = task if task is not None else task_from_config(config.task)
        self._pools = pools
        self._owns_pools = pools is None
        self._request_ids = RequestIds()  # unique over every job of this engine
        self._metrics = metrics
        self.setup_seconds = 0.0

    def pools(self) -> Pools:
        """The pools, built now if needed (Ray: connects and starts the actors)."""
        if self._pools is None:
            start = time.monotonic()
            if self.config.ray.mode == "inprocess":
                self._pools = build_inprocess_pools(self.config.generator, self.config.verifier, self.task)
            else:
                from ponder.cluster.pools import build_ray_pools  # Ray only when a job uses it

                self._pools = build_ray_pools(self.config, task=self.task)
            self.setup_seconds = time.monotonic() - start
        return self._pools

    def metrics(self) -> JobMetrics:
        """What the engine's jobs report to, made now if needed (see the class docstring)."""
        if self._metrics is None:
            interval = self.config.engine.metrics_interval_s
            if self.config.ray.mode == "inprocess" or not interval:
                self._metrics = NO_METRICS
            else:
                from ponder.cluster.metrics import RayJobMetrics  # Ray only when a job uses it

                self._metrics = RayJobMetrics(interval)
        return self._metrics

    def run(self, problems: Sequence[Problem], out_dir: str | os.PathLike,
            progress: bool = True, resume: bool = False) -> dict[str, Any]:
        """Solve ``problems``; write ``results.jsonl``, ``summary.json`` and ``config.yaml`` to ``out_dir``.

        The run directory also gets ``trees.jsonl`` (every finished tree, for training)
        and a checkpoint every ``output.checkpoint_every_s`` seconds.

        Args:
            problems: the problems, with unique ids.
            out_dir: the run directory.
            progress: show progress as ``output.progress`` says; False shows none.
            resume: go on from ``out_dir``'s checkpoint and results: finished problems are
                kept, the rest continue where the checkpoint left them.

        Returns:
            The summary (also in ``summary.json``). If interrupted, the summary of the
            problems finished so far and a checkpoint are written before the exception
            propagates.

        Raises:
            ValueError: duplicate problem ids, or a strategy that needs a verifier without one.
            EngineError: the job cannot go on.
        """
        config = self.config
        pools = self.pools()  # before the run directory: a model that fails to load leaves none
        specs = model_specs(pools)
        metrics = self.metrics()
        mode = config.output.progress if progress else "off"
        with job_gc(), Progress(len(problems), mode, config.output.progress_interval_s) as bar:
            runner = JobRunner(config, self.task, problems, specs, out_dir,
                               request_ids=self._request_ids, resume=resume,
                               checkpoint_every_s=config.output.checkpoint_every_s)
            bar.update(runner.num_finished, runner.totals.num_solved, runner.totals.num_verifiable,
                       flops=runner.budget.job_spent)
            runner.generator_prompts = rendered_root_prompts(pools.generator, self.task, problems)
            runner.on_finish = lambda record: bar.update(
                1, int(bool(record.correct)), int(record.correct is not None),
                flops=runner.budget.job_spent)
            start = time.monotonic()
            summary = None
            metrics.job_started(runner)
            try:
                run_loop(runner, pools, metrics)
            finally:
                summary = runner.summary(time.monotonic() - start, len(problems))
                summary["setup_seconds"] = round(self.setup_seconds, 3)
                summary["models"] = {"generator": asdict(specs[0]), "verifier": asdict(specs[1])}
                runner.close(summary)
                metrics.job_ended(runner, pools)
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


def run_job(config: Config, problems: Sequence[Problem], out_dir: str | os.PathLike,
            progress: bool = True, task: Task | None = None, resume: bool = False) -> dict[str, Any]:
    """Solve ``problems`` with the pools ``config`` describes (Ray, or in-process), then shut down.

    Args:
        config: a validated Config.
        problems: the problems, with unique ids.
        out_dir: the run directory for results.jsonl, summary.json and config.yaml.
        progress: show progress as ``config.output.progress`` says; False shows none.
        task: the task object (default: built from ``config.task``).
        resume: go on from ``out_dir``'s checkpoint and results (see ``Engine.run``).

    Returns:
        The summary dict written to ``summary.json``.
    """
    with Engine(config, task) as engine:
        return engine.run(problems, out_dir, progress, resume=resume)


def run_inprocess(config: Config, problems: Sequence[Problem], out_dir: str | os.PathLike,
                  generator: Any, verifier: Any = None, task: Task | None = None,
                  progress: bool = False, metrics: JobMetrics = NO_METRICS) -> dict[str, Any]:
    """``run_job`` on backend objects called in this process: no Ray, no actors.

    Args:
        generator: a GeneratorBackend instance.
        verifier: a VerifierBackend instance, or None for strategies that never score.
        metrics: what the job reports to (default: nothing).
        (the rest as in ``run_job``)
    """
    pools = InProcessPools(InProcessPool(generator, "generator"),
                           None if verifier is None else InProcessPool(verifier, "verifier"))
    with Engine(config, task, pools=pools, metrics=metrics) as engine:
        return engine.run(problems, out_dir, progress)
