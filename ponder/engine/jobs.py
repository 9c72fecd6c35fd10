"""One search job that an engine loop steps: checkpointed, resumable, recording its traces.

``JobRunner`` owns a job's scheduler, FLOP ledger and run directory; it never
talks to actors. The loop that drives it (``Engine.run`` for ``ponder solve``,
the persistent engine of ``ponder serve`` for many jobs at once) does:

    plan = runner.schedule()          # reserve + batch; dispatch the batches
    runner.update(results)            # the results of this job's requests (``owns``)
    runner.fail(requests, reason)     # requests the pools gave up on

and the runner writes each finished problem to ``results.jsonl`` (then its tree to
``trees.jsonl``), and a checkpoint every ``checkpoint_every_s`` seconds or
``checkpoint_every_updates`` updates, and at the end. A runner made with
``resume=True`` picks up where the run directory's checkpoint and results left off
(see ``ponder.engine.checkpoint``).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ponder.engine.checkpoint import (Cadence, JobState, RequestIds, TrackedStrategy, add_stats,
                                       ledger_with_finished)
from ponder.engine.results import ProblemRecord, RunTotals, TokenCounts, make_summary
from ponder.engine.rundir import RunDir
from ponder.engine.traces import TraceRecorder
from ponder.search.budget import BudgetManager
from ponder.search.flops import ModelSpec, SlackTokenBound, StepCosts
from ponder.search.messages import GenerateRequest, Request, Result
from ponder.search.scheduler import Plan, Scheduler
from ponder.search.strategies import get_strategy
from ponder.search.strategies.base import Answer, JobContext
from ponder.search.tree import Tree
from ponder.tasks.base import Problem, Task


def problem_seed(job_seed: int, index: int) -> int:
    """The seed of problem ``index``'s strategy: distinct per problem, reproducible per job seed."""
    return (job_seed * 1_000_003 + index) % 2**31


class JobRunner:
    """A job's scheduler, ledger and run directory, stepped by an engine loop.

    Args:
        config: the validated Config (search, budget, engine batch limits).
        task: the task object.
        problems: the job's problems, unique ids.
        specs: ``(generator, verifier)`` ModelSpecs of the pools the job runs on.
        out_dir: the run directory.
        request_ids: the id counter shared by every job on the same pools.
        resume: continue from ``out_dir``'s checkpoint and results (a fresh start if
            it has neither).
        checkpoint_every_s, checkpoint_every_updates: checkpoint cadence (0 = off).
        on_finish: called with each finished problem's record (progress bars).

    Raises:
        ValueError: duplicate problem ids, unknown strategy or bad parameters.
        PonderCheckpointError: ``resume`` and the checkpoint is unusable.
    """

    def __init__(self, config: Any, task: Task, problems: Sequence[Problem],
                 specs: tuple[ModelSpec, ModelSpec], out_dir: str | os.PathLike, *,
                 request_ids: RequestIds | None = None, resume: bool = False,
                 checkpoint_every_s: float = 30.0, checkpoint_every_updates: int = 0,
                 on_finish: Callable[[ProblemRecord], None] | None = None):
        self.config, self.task = config, task
        self.problems = _index(problems)  # problem_id -> Problem
        self.run_dir = RunDir(out_dir).create()
        self.out_dir = self.run_dir.path
        self.request_ids = request_ids or RequestIds()
        self.cadence = Cadence(checkpoint_every_s, checkpoint_every_updates)
        self.on_finish = on_finish
        self.errors: dict[str, str] = {}  # problem_id -> why its requests failed
        self.cancelled = False
        self.num_checkpoints = 0
        self._mine: set[int] = set()  # ids of this job's requests in flight
        # Parsed once a job, for all its problems; the config load checked them too, but a
        # job that ``ponder serve`` takes brings its own, which no config load has seen.
        self.strategy_cls = get_strategy(config.search.strategy)
        self.params = self.strategy_cls.Params.from_dict(config.search.params)
        # How the scheduler prices steps; strategies read it from their JobContext.
        # The slack covers specials; a backend's input format (chat turns, a PRM's layout) adds its own.
        slack = config.budget.token_bound_slack + max(spec.prompt_overhead_tokens for spec in specs)
        self.step_costs = StepCosts(specs[0], specs[1], SlackTokenBound(slack))
        self.state = self._resume() if resume else None
        if self.state is None:
            self.state = self._fresh()
        self.state.context.step_costs = self.step_costs  # a resumed job prices with today's pools
        self.budget = self.state.budget
        self.scheduler = Scheduler(
            self.budget, specs[0], specs[1],
            max_batch_requests=config.engine.max_batch_requests,
            max_batch_tokens=config.engine.max_batch_tokens,
            token_bound=self.step_costs.token_bound,
            step_check=self._check_step if config.search.step_check else None)
        self.active = {s.problem_id: s for s in self.state.strategies}  # problem_id -> strategy
        self.base_stats = dict(self.state.stats)  # problem_id -> counters from before a resume
        for strategy in self.state.strategies:
            self.scheduler.add(strategy)
        # results.jsonl starts over from the finished lines, in job order, then grows
        self._results = self.run_dir.open_results(
            self.state.finished[pid] for pid in self.problems if pid in self.state.finished)
        self.generator_prompts: dict[str, str] = {}  # problem_id -> what the generator read at its root
        self.traces = TraceRecorder(self.run_dir, specs[0].name, specs[1].name, config.search.strategy)
        self.run_dir.write_config(config.to_dict())
        self.run_dir.write_problems(self.problems.values())

    def _check_step(self, problem_id: str, steps) -> bool | None:
        """The task's exact verdict on the last of ``steps`` (``search.step_check``)."""
        return self.task.check_step(self.problems[problem_id], list(steps))

    # -- building ---------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir.checkpoint_path

    @property
    def totals(self) -> RunTotals:
        """Running totals over every finished problem's line, those from before a resume too."""
        return self._results.totals

    def _fresh(self, finished: dict[str, dict] | None = None) -> JobState:
        finished = finished or {}
        budget_config = self.config.budget
        empty = BudgetManager(budget_config.flops_total, budget_config.flops_per_problem)
        budget = ledger_with_finished(empty.to_state(), finished)
        state = JobState(list(self.problems), budget, self.request_ids, JobContext(budget=budget, step_costs=self.step_costs),
                         finished=dict(finished), meta={"strategy": self.config.search.strategy})
        state.strategies = self._new_strategies(state)
        return state

    def _new_strategies(self, state: JobState) -> list[TrackedStrategy]:
        """Strategies for the problems that are neither finished nor in ``state`` yet."""
        search = self.config.search
        cls, params = self.strategy_cls, self.params
        have = set(state.finished) | {s.problem_id for s in state.strategies}
        out = []
        for index, problem in enumerate(self.problems.values()):
            if problem.problem_id in have:
                continue
            tree = Tree(problem.problem_id, self.task.prompt(problem), self.task.step_delimiter)
            out.append(TrackedStrategy(cls(tree, self.task, params, problem_seed(search.seed, index),
                                           self.request_ids, state.context)))
        return out

    def _resume(self) -> JobState | None:
        finished = {pid: r for pid, r in self.run_dir.read_finished().items() if pid in self.problems}
        if not self.checkpoint_path.exists():
            return self._fresh(finished) if finished else None
        state = self.run_dir.load_checkpoint(self.task, finished, self.request_ids)
        saved = state.meta.get("strategy")
        if saved != self.config.search.strategy:
            raise ValueError(f"checkpoint {self.checkpoint_path} was written by strategy {saved!r}, "
                             f"not {self.config.search.strategy!r}; resume with the same search config")
        unknown = sorted(set(state.problem_ids) - set(self.problems))
        if unknown:
            raise ValueError(f"checkpoint {self.checkpoint_path} holds problems {unknown[:5]} that "
                             f"this job does not have; resume with the same problems")
        state.problem_ids = list(self.problems)
        state.strategies += self._new_strategies(state)  # problems added since the checkpoint
        return state

    # -- stepping -----------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        """True until every problem has a written result."""
        return self.scheduler.has_work

    @property
    def num_finished(self) -> int:
        return len(self.state.finished)

    def schedule(self) -> Plan:
        """The scheduler's next plan; its requests are this job's until their results arrive."""
        plan = self.scheduler.schedule()
        for batch in (*plan.generate_batches, *plan.score_batches):
            self._mine.update(r.request_id for r in batch)
        self._finish()
        return plan

    def owns(self, request_id: int) -> bool:
        """Whether a result with ``request_id`` belongs to this job."""
        return request_id in self._mine

    def update(self, results: list[Result]) -> None:
        """Deliver this job's results, write problems that finished, checkpoint if due."""
        if results:
            self._mine.difference_update(r.request_id for r in results)
            self.scheduler.update(results)
            for problem_id, error in self.scheduler.errors.items():
                self.errors.setdefault(problem_id, error)
        self._finish()
        if self.cadence.tick(1 if results else 0) and self.has_work:
            self.checkpoint()

    def fail(self, requests: list[Request], reason: str) -> None:
        """Stop the problems of requests that failed on every attempt; their lines say why."""
        for request in requests:
            self._mine.discard(request.request_id)
            problem_id = _problem_of(request)
            role = "generator" if isinstance(request, GenerateRequest) else "verifier"
            self.errors.setdefault(problem_id, f"{role} request failed: {reason}")
            self.scheduler.cancel(problem_id)
        self._finish()

    def cancel(self) -> int:
        """Stop every active problem (reason ``cancelled``), releasing its reservations.

        Returns:
            How many problems were stopped.
        """
        self.cancelled = True
        stopped = sum(self.scheduler.cancel(pid) for pid in list(self.active))
        self._finish()
        return stopped

    def _finish(self) -> None:
        for answer in self.scheduler.pop_finished():
            strategy = self.active.pop(answer.problem_id)
            record = self._record(answer)
            self.state.finished[answer.problem_id] = self._results.write(record)
            problem = self.problems[answer.problem_id]
            self.traces.record(strategy.tree, problem.problem,
                               lambda a, p=problem: self.task.verify(p, a), record.answer,
                               record.correct, self.generator_prompts.get(answer.problem_id))
            strategy.tree.clear()  # recorded: nothing reads it again (checkpoints hold active ones)
            if self.on_finish is not None:
                self.on_finish(record)

    def _record(self, answer: Answer) -> ProblemRecord:
        problem_id = answer.problem_id
        problem = self.problems[problem_id]
        stats = add_stats(self.base_stats.pop(problem_id, None), answer.extra.get("stats", {}))
        tokens = {
            "generator": TokenCounts(stats.get("generator_prompt_tokens", 0),
                                     stats.get("generator_cached_tokens", 0),
                                     stats.get("generator_generated_tokens", 0)),
            "verifier": TokenCounts(stats.get("verifier_prompt_tokens", 0),
                                    stats.get("verifier_cached_tokens", 0), 0),
        }
        return ProblemRecord(
            id=problem_id, problem=problem.problem, answer=answer.answer, trace=list(answer.trace),
            correct=self.task.verify(problem, answer.answer), score=answer.score,
            flops=self.budget.spent(problem_id), budget_flops=self.budget.cap(problem_id),
            flops_by_model=self.budget.spent_by_model(problem_id),
            stop_reason="error" if problem_id in self.errors else answer.stop_reason,
            tokens=tokens, num_nodes=answer.num_nodes, reference=problem.reference,
            error=self.errors.get(problem_id), search=search_account(answer.extra))

    # -- checkpoints, status, end ---------------------------------------------------------

    def summary(self, wall_seconds: float, num_requested: int) -> dict[str, Any]:
        """The job's ``summary.json`` content so far (``make_summary``, plus ``num_failed``).

        Args:
            wall_seconds: how long the job has run.
            num_requested: problems the job was given.
        """
        config = self.config
        summary = make_summary(
            self.totals, total_flops=self.budget.job_spent,
            flops_by_model=self.budget.spent_by_model(), wall_seconds=wall_seconds,
            strategy=config.search.strategy, strategy_params=config.search.params,
            budget=asdict(config.budget), task=getattr(self.task, "name", "") or config.task.name,
            num_requested=num_requested)
        summary["num_failed"] = len(self.errors)
        return summary

    def checkpoint(self) -> int:
        """Write the checkpoint now; returns its size in bytes."""
        state = self.state
        state.strategies = list(self.active.values())
        state.stats = {pid: add_stats(self.base_stats.get(pid), self.scheduler.stats(pid).to_dict())
                       for pid in self.active}
        self.num_checkpoints += 1
        return self.run_dir.save_checkpoint(state, self.task)

    def status(self, best: bool = True) -> dict[str, Any]:
        """Progress, FLOPs and (if ``best``) the best answer so far of every problem."""
        out = {"num_problems": len(self.problems), "num_finished": self.num_finished,
               "num_active": len(self.active), "num_solved": self.totals.num_solved,
               "flops_spent": self.budget.job_spent, "flops_reserved": self.budget.job_reserved,
               "flops_total": self.budget.flops_total, "cancelled": self.cancelled}
        if best:
            answers = {pid: {"answer": r["answer"], "score": r["score"], "correct": r["correct"],
                             "stop_reason": r["stop_reason"], "flops": r["flops"]}
                       for pid, r in self.state.finished.items()}
            for pid, strategy in self.active.items():
                answer = strategy.answer()
                answers[pid] = {"answer": answer.answer, "score": answer.score, "correct": None,
                                "stop_reason": "running", "flops": self.budget.spent(pid)}
            out["best"] = {pid: answers[pid] for pid in self.problems if pid in answers}
        return out

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Write the final checkpoint (and ``summary.json`` if given); close the files."""
        try:
            self.checkpoint()
            if summary is not None:
                self.run_dir.write_summary(summary)
        finally:
            self._results.close()
            self.traces.close()


def search_account(extra: dict) -> dict:
    """The JSON scalars of a strategy's ``Answer.extra`` (its counters live in ``stats``)."""
    return {k: v for k, v in extra.items()
            if k != "stats" and (v is None or isinstance(v, (str, int, float, bool)))}


def _index(problems: Sequence[Problem]) -> dict[str, Problem]:
    by_id: dict[str, Problem] = {}  # problem_id -> Problem
    for problem in problems:
        if problem.problem_id in by_id:
            raise ValueError(f"problem id {problem.problem_id!r} appears twice; ids must be unique")
        by_id[problem.problem_id] = problem
    return by_id


def _problem_of(request: Request) -> str:
    # Strategies name every request's node as "problem_id:node_id" (Tree.prefix_id).
    return request.prefix_id.rpartition(":")[0]
