"""Resume through the scheduler: a job checkpointed with requests in flight, crashed and
restored, finishes every problem with the answers, FLOPs and counters of a job never
interrupted, and with caps, never passes them."""

from __future__ import annotations

import time

import pytest
from conftest import inprocess_config, scripted_job

from ponder.engine.checkpoint import (JobState, RequestIds, TrackedStrategy, add_stats, load_job,
                                       save_job)
from ponder.engine.rundir import read_results
from ponder.search.budget import BudgetManager
from ponder.search.scheduler import Scheduler
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier
from ponder.search.strategies import JobContext, get_strategy
from ponder.search.tree import Tree

TASK = ScriptedTask()
PROBLEMS = [ScriptedProblem(f"Q{i}: resume\n", answer=str(40 + i), num_steps=3 + i % 2,
                            p_correct=0.5 + 0.1 * (i % 3)) for i in range(5)]
SIZES = {
    "best_of_n": {"n": 6}, "beam": {"beam_width": 2, "expansion_factor": 2},
    "dvts": {"num_samples": 8, "beam_width": 4}, "rebase": {"width": 6},
    "mcts": {"num_simulations": 12, "rollout_depth": 1}, "compute_optimal": {"num_probe_samples": 4, "max_solution_tokens": 80},
}


class Job:
    """The engine loop in miniature: results of a step are delivered one step later, so a
    checkpoint taken between steps always has requests in flight."""

    def __init__(self, state: JobState):
        self.state = state
        self.scheduler = Scheduler(state.budget, ScriptedGenerator().model_spec(),
                                   ScriptedVerifier().model_spec(), max_batch_requests=4)
        self.active = {s.problem_id: s for s in state.strategies}  # problem_id -> strategy
        for strategy in state.strategies:
            self.scheduler.add(strategy)
        self.generator = ScriptedGenerator(PROBLEMS, seed=2)
        self.verifier = ScriptedVerifier(PROBLEMS, seed=2)
        self.base_stats = dict(state.stats)  # problem_id -> counters from before the crash
        self.in_flight = []  # results computed but not yet delivered
        self.max_in_flight = 0

    def step(self) -> None:
        plan = self.scheduler.schedule()
        results = [r for b in plan.generate_batches for r in self.generator.generate(b)]
        results += [r for b in plan.score_batches for r in self.verifier.score(b)]
        self.scheduler.update(self.in_flight)
        self.in_flight = results
        self.max_in_flight = max(self.max_in_flight, self.scheduler.num_in_flight)
        for answer in self.scheduler.pop_finished():
            pid = answer.problem_id
            budget = self.state.budget
            self.state.finished[pid] = {
                "id": pid, "answer": answer.answer, "trace": answer.trace,
                "stop_reason": answer.stop_reason, "flops": budget.spent(pid),
                "flops_by_model": budget.spent_by_model(pid),
                "stats": add_stats(self.base_stats.pop(pid, None), answer.extra["stats"])}
            del self.active[pid]

    def run(self, max_steps: int = 10_000) -> int:
        for steps in range(max_steps):
            if not self.scheduler.has_work and not self.in_flight:
                return steps
            self.step()
        raise AssertionError("job did not finish")

    def snapshot(self) -> JobState:
        state = self.state
        state.strategies = list(self.active.values())
        state.stats = {pid: add_stats(self.base_stats.get(pid), self.scheduler.stats(pid).to_dict())
                       for pid in self.active}
        return state


def new_state(name: str, flops_total=None, flops_per_problem=None) -> JobState:
    budget = BudgetManager(flops_total, flops_per_problem)
    ids, context = RequestIds(), JobContext(budget=budget)
    cls = get_strategy(name)
    params = cls.Params.from_dict(SIZES[name])
    strategies = [TrackedStrategy(cls(Tree(f"p{i}", p.prompt), TASK, params, i, ids, context))
                  for i, p in enumerate(PROBLEMS)]
    return JobState([s.problem_id for s in strategies], budget, ids, context, strategies)


def crash_and_resume(name: str, cut: int, tmp_path, **caps) -> Job:
    job = Job(new_state(name, **caps))
    for _ in range(cut):
        job.step()
    while job.scheduler.num_in_flight == 0 and job.scheduler.has_work:
        job.step()  # cut where requests are in flight
    assert job.scheduler.num_in_flight > 0, "the job ended before the cut"
    path = tmp_path / "checkpoint.ponder"
    save_job(path, job.snapshot(), TASK)
    del job  # the crash: scheduler, pools and undelivered results are gone
    resumed = Job(load_job(path, TASK))
    resumed.run()
    return resumed


def outcome(job: Job) -> dict:
    return {pid: (r["answer"], r["trace"], r["stop_reason"], r["flops"], r["stats"])
            for pid, r in sorted(job.state.finished.items())}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_resumed_job_matches_an_uninterrupted_one(name, tmp_path):
    whole = Job(new_state(name))
    num_steps = whole.run()
    assert whole.max_in_flight > 0
    resumed = crash_and_resume(name, max(1, num_steps // 2), tmp_path)
    assert outcome(resumed) == outcome(whole)  # answers, FLOPs and counters, none counted twice
    assert resumed.state.budget.job_spent == whole.state.budget.job_spent
    assert resumed.state.budget.job_reserved == 0


@pytest.mark.parametrize("name", ["beam", "mcts", "compute_optimal"])
def test_caps_hold_across_a_resume(name, tmp_path):
    whole = Job(new_state(name))
    whole.run()
    per_problem = max(r["flops"] for r in whole.state.finished.values()) // 2
    total = whole.state.budget.job_spent // 2
    resumed = crash_and_resume(name, 2, tmp_path, flops_total=total, flops_per_problem=per_problem)
    budget = resumed.state.budget
    assert set(resumed.state.finished) == {f"p{i}" for i in range(len(PROBLEMS))}
    assert all(r["flops"] <= per_problem for r in resumed.state.finished.values())
    assert budget.job_spent <= total and budget.job_reserved == 0
    assert budget.job_spent == sum(r["flops"] for r in resumed.state.finished.values())


def test_two_crashes_in_a_row(tmp_path):
    whole = Job(new_state("mcts"))
    whole.run()
    job = Job(new_state("mcts"))
    for cut in (2, 3):
        for _ in range(cut):
            job.step()
        while job.scheduler.num_in_flight == 0 and job.scheduler.has_work:
            job.step()
        save_job(tmp_path / "checkpoint.ponder", job.snapshot(), TASK)
        job = Job(load_job(tmp_path / "checkpoint.ponder", TASK))
    job.run()
    assert outcome(job) == outcome(whole)


# -- JobRunner: the run directory survives a crash ---------------------------------------

def _engine_job(strategy="mcts", **budget):
    params = {"mcts": {"num_simulations": 8, "num_parallel": 2},
              "beam": {"beam_width": 2, "expansion_factor": 2}}[strategy]
    task, problems, gen, ver = scripted_job(num_problems=5)
    config = inprocess_config(strategy, params, **budget)
    return config, task, problems, gen, ver


def _drive(runner, gen, ver, max_updates=None) -> bool:
    """The engine loop on in-process pools; False if stopped ("crashed") after ``max_updates``."""
    from ponder.engine.inprocess import InProcessPool, InProcessPools

    pools = InProcessPools(InProcessPool(gen, "generator"), InProcessPool(ver, "verifier"))
    num_updates = 0
    while runner.has_work:
        plan = runner.schedule()
        for batch in plan.generate_batches:
            pools.generator.dispatch(batch)
        for batch in plan.score_batches:
            pools.verifier.dispatch(batch)
        runner.update(pools.collect(0))
        num_updates += 1
        if max_updates is not None and num_updates >= max_updates:
            return False
    return True


def _runner(config, task, problems, gen, ver, out_dir, **kwargs):
    from ponder.engine.jobs import JobRunner

    return JobRunner(config, task, problems, (gen.model_spec(), ver.model_spec()), out_dir, **kwargs)


def _die(runner) -> None:
    """The process died: its files are closed, but no final checkpoint and no summary."""
    runner._results.close()
    runner.traces.close()


def _crash_and_resume(config, task, problems, gen, ver, out_dir, crash_after, resume_problems=None):
    """Run until ``crash_after`` updates (a checkpoint after each), die, resume and finish."""
    crashed = _runner(config, task, problems, gen, ver, out_dir, checkpoint_every_s=0,
                      checkpoint_every_updates=1)
    assert not _drive(crashed, gen, ver, max_updates=crash_after)
    _die(crashed)
    resumed = _runner(config, task, resume_problems or problems, gen, ver, out_dir, resume=True)
    assert _drive(resumed, gen, ver)
    resumed.close()
    return resumed


def _lines(out_dir) -> dict:
    rows = read_results(out_dir)
    assert len(rows) == len({r["id"] for r in rows}), "a problem was written twice"
    return {r["id"]: (r["answer"], r["trace"], r["flops"], r["tokens"], r["stop_reason"]) for r in rows}


@pytest.mark.parametrize("crash_after", [3, 9, 17])
def test_job_runner_resumes_its_run_directory(tmp_path, crash_after):
    config, task, problems, gen, ver = _engine_job()
    whole = _runner(config, task, problems, gen, ver, tmp_path / "whole")
    assert _drive(whole, gen, ver)
    whole.close()

    out = tmp_path / "crashy"
    crashed = _runner(config, task, problems, gen, ver, out, checkpoint_every_s=0,
                      checkpoint_every_updates=2)
    assert not _drive(crashed, gen, ver, max_updates=crash_after)
    _die(crashed)
    resumed = _runner(config, task, problems, gen, ver, out, resume=True, checkpoint_every_s=0,
                      checkpoint_every_updates=2)
    assert resumed.num_finished <= len(problems)
    assert _drive(resumed, gen, ver)
    resumed.close()
    assert _lines(out) == _lines(tmp_path / "whole")
    assert resumed.budget.job_spent == whole.budget.job_spent
    from ponder.engine.traces import read_traces

    assert len(read_traces(out)) == len(read_traces(tmp_path / "whole"))


def test_resume_without_a_checkpoint_keeps_finished_lines(tmp_path):
    config, task, problems, gen, ver = _engine_job("beam")
    first = _runner(config, task, problems[:2], gen, ver, tmp_path, checkpoint_every_s=0)
    assert _drive(first, gen, ver)
    _die(first)  # before any checkpoint was written
    assert not (tmp_path / "checkpoint.ponder").exists()
    spent = first.budget.job_spent
    resumed = _runner(config, task, problems, gen, ver, tmp_path, resume=True)
    assert resumed.num_finished == 2 and resumed.budget.job_spent == spent
    assert _drive(resumed, gen, ver)
    resumed.close()
    assert set(_lines(tmp_path)) == {p.problem_id for p in problems}


def test_resumed_job_with_caps_never_passes_them(tmp_path):
    config, task, problems, gen, ver = _engine_job("mcts", flops_per_problem=1_200_000,
                                                   flops_total=4_000_000)
    resumed = _crash_and_resume(config, task, problems, gen, ver, tmp_path, crash_after=6)
    rows = read_results(tmp_path)
    assert {r["id"] for r in rows} == {p.problem_id for p in problems}
    assert all(r["flops"] <= 1_200_000 for r in rows)
    assert sum(r["flops"] for r in rows) == resumed.budget.job_spent <= 4_000_000


def test_resume_with_more_problems_searches_the_new_ones(tmp_path):
    config, task, problems, gen, ver = _engine_job("beam")
    _crash_and_resume(config, task, problems[:3], gen, ver, tmp_path, crash_after=4,
                      resume_problems=problems)
    assert set(_lines(tmp_path)) == {p.problem_id for p in problems}


def test_resume_refuses_another_strategy_or_fewer_problems(tmp_path):
    from ponder.config import load_config

    config, task, problems, gen, ver = _engine_job("beam")
    first = _runner(config, task, problems, gen, ver, tmp_path, checkpoint_every_s=0,
                    checkpoint_every_updates=1)
    _drive(first, gen, ver, max_updates=2)
    _die(first)
    other = load_config(data={**config.to_dict(), "search": {"strategy": "mcts"}})
    with pytest.raises(ValueError, match="written by strategy 'beam', not 'mcts'"):
        _runner(other, task, problems, gen, ver, tmp_path, resume=True)
    with pytest.raises(ValueError, match="holds problems"):
        _runner(config, task, problems[:2], gen, ver, tmp_path, resume=True)


def test_a_run_directory_remembers_its_problems(tmp_path):
    from ponder.engine.rundir import RunDir

    config, task, problems, gen, ver = _engine_job("beam")
    runner = _runner(config, task, problems, gen, ver, tmp_path)
    runner.close()
    assert RunDir(tmp_path).read_problems() == problems
    with pytest.raises(FileNotFoundError, match="holds no job to resume"):
        RunDir(tmp_path / "elsewhere").read_problems()


def test_sigkill_ponder_solve_then_resume_with_only_the_directory(tmp_path):
    """No Ray: the in-process engine, killed mid-job; ``--resume DIR`` needs nothing else."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "ponder.cli", "solve"]
    first = [*cli, "--range", "0:16", "--out", str(out), "--no-progress",
             "--set", "ray.mode=inprocess", "--set", "output.checkpoint_every_s=0.1",
             "--set", "generator.backend=test_fault:SlowScriptedGenerator",
             "--set", "generator.kwargs.instant_steps=4", "--set", "generator.kwargs.delay_s=0.02",
             "--set", f"generator.kwargs.marker_dir={tmp_path}",
             "--set", "verifier.backend=scripted", "--set", "verifier.kwargs.instant=true",
             "--set", "budget.flops_per_problem=3e7", "--set", "budget.flops_total=4e8",
             "--set", "search.strategy=mcts", "--set", "search.params.num_simulations=12"]
    proc = subprocess.Popen(first, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    results = out / "results.jsonl"
    while not ((out / "checkpoint.ponder").exists() and results.exists()
               and results.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(out)
    assert 2 <= len(before) < 16
    done = subprocess.run([*cli, "--resume", str(out), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_results(out)
    assert sorted(int(r["id"]) for r in records) == list(range(16))
    assert records[:len(before)] == before  # kept as they were, not searched again
    assert all(r["flops"] <= r["budget_flops"] == 3e7 for r in records)
    assert sum(r["flops"] for r in records) <= 4e8
