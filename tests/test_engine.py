"""The engine loop: in-process on the scripted fake backend, then on a real local Ray.

In-process tests check what the loop must guarantee for any strategy: one line per
problem, budget caps held, FLOPs and token totals that add up, backend failures
reported per problem. The Ray tests (marked ``ray``) share one local Ray for the
module and run the same loop over actors: scripted backends, ``ponder solve`` as a
subprocess joining that Ray, and the embedded model on easy Game-of-24 puzzles with
every answer checked by the task's verifier.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import SMALL_PARAMS, inprocess_config, scripted_job

from ponder.engine.engine import problem_seed, run_inprocess
from ponder.search.flops import SlackTokenBound
from ponder.engine.results import ProblemRecord, TokenCounts
from ponder.engine.rundir import read_results
from ponder.config import load_config
from ponder.search import iter_strategies
from ponder.search.scripted import ScriptedProblem, ScriptedVerifier
from ponder.search.tree import Node

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("strategy", sorted(iter_strategies()))
def test_every_strategy_finishes_every_problem_with_consistent_records(tmp_path, strategy):
    task, problems, gen, ver = scripted_job()
    config = inprocess_config(strategy, SMALL_PARAMS.get(strategy, {}))
    summary = run_inprocess(config, problems, tmp_path, gen, ver, task=task)
    lines = read_results(tmp_path)
    assert sorted(line["id"] for line in lines) == [p.problem_id for p in problems]
    for line in lines:
        assert line["correct"] == (line["answer"] == str(40 + int(line["id"])))
        assert line["flops"] == sum(line["flops_by_model"].values()) > 0
        assert line["tokens"]["generator"]["generated"] > 0
        assert line["budget_flops"] is None
        assert line["num_nodes"] >= 1
        assert "stats" not in line["search"]
        if strategy == "compute_optimal":  # its account says what phase 2 did
            assert line["search"]["bin"] in ("easy", "medium", "hard", "hopeless")
            assert line["search"]["phase2"] in ("best_of_n", "beam", "dvts", "stop")
    assert summary["num_problems"] == len(problems) == summary["num_requested"]
    assert summary["num_solved"] == sum(bool(line["correct"]) for line in lines)
    assert summary["total_flops"] == sum(line["flops"] for line in lines)
    assert summary["tokens"]["generator"]["generated"] == sum(
        line["tokens"]["generator"]["generated"] for line in lines)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "config.yaml").is_file()


def test_search_solves_scripted_problems_that_a_single_sample_mostly_misses(tmp_path):
    # p_correct 0.5 per step over 3 steps: one sample is right 1/8 of the time.
    task, problems, gen, ver = scripted_job(num_problems=8, p_correct=0.5)
    config = inprocess_config("beam", {"beam_width": 4, "expansion_factor": 4})
    summary = run_inprocess(config, problems, tmp_path, gen, ver, task=task)
    assert summary["accuracy"] >= 0.75


@pytest.mark.parametrize("strategy", ["beam", "best_of_n", "mcts"])
def test_per_problem_and_job_budgets_hold(tmp_path, strategy):
    task, problems, gen, ver = scripted_job(num_problems=5)
    free = run_inprocess(inprocess_config(strategy, SMALL_PARAMS[strategy]), problems,
                         tmp_path / "free", gen, ver, task=task)
    cap = min(line["flops"] for line in read_results(tmp_path / "free")) // 2
    total = 3 * cap  # less than the 5 problems would spend even at their caps
    config = inprocess_config(strategy, SMALL_PARAMS[strategy], flops_per_problem=cap,
                              flops_total=total)
    summary = run_inprocess(config, problems, tmp_path / "capped", gen, ver, task=task)
    lines = read_results(tmp_path / "capped")
    assert len(lines) == len(problems)
    assert all(line["flops"] <= line["budget_flops"] == cap for line in lines)
    assert summary["total_flops"] <= total < free["total_flops"]
    assert all(line["stop_reason"] == "budget" for line in lines)


def test_same_seed_same_results_and_other_seed_differs(tmp_path):
    task, problems, gen, ver = scripted_job(p_correct=0.5)
    runs = []
    for seed, out in ((3, "a"), (3, "b"), (4, "c")):
        config = inprocess_config("best_of_n", {"n": 4})
        config.search.seed = seed
        run_inprocess(config, problems, tmp_path / out, gen, ver, task=task)
        runs.append({line["id"]: line["trace"] for line in read_results(tmp_path / out)})
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert problem_seed(3, 0) != problem_seed(3, 1) != problem_seed(4, 0)


def test_result_lines_are_the_records_as_dicts(tmp_path):
    record = ProblemRecord(
        id="7", problem="q", answer="1 + 1", trace=["a", "b"], correct=True, score=0.5, flops=30,
        budget_flops=None, flops_by_model={"generator": 20, "verifier": 10}, stop_reason="done",
        tokens={"generator": TokenCounts(5, 2, 3), "verifier": TokenCounts(4, 1, 0)},
        num_nodes=3, search={"num_levels": 2})
    assert list(record.to_dict().items()) == list(asdict(record).items())


def test_token_bound_counts_utf8_bytes():
    for text in ("", "1 + 2 = 3\n", "√9 × 8 = 24", "emoji \U0001F600"):
        assert SlackTokenBound(2)(text) == len(text.encode("utf-8")) + 2


def test_a_finished_job_frees_its_trees_without_the_cycle_collector(tmp_path):
    # Full collections stall the engine loop; finished trees must not wait for one.
    task, problems, gen, ver = scripted_job()
    config = inprocess_config("beam", SMALL_PARAMS["beam"])
    gc.collect()
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    gc.disable()
    try:
        run_inprocess(config, problems, tmp_path, gen, ver, task=task)
        nodes = sum(isinstance(o, Node) for o in gc.get_objects())
    finally:
        gc.enable()
    assert nodes <= len(problems)  # at most each cleared tree's fresh root
    # The job's collector settings end with the job.
    assert gc.get_freeze_count() == frozen and gc.get_threshold() == threshold


class FailingVerifier(ScriptedVerifier):
    """A scripted verifier that raises on one problem's prompt, as a buggy backend would."""

    def __init__(self, bad_prompt: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_prompt = bad_prompt

    def score(self, requests):
        if any(r.prompt == self.bad_prompt for r in requests):
            raise RuntimeError("verifier exploded")
        return super().score(requests)


def test_a_failing_request_stops_only_its_problem(tmp_path):
    task, problems, gen, _ = scripted_job(num_problems=4)
    scripted = [ScriptedProblem(prompt=task.prompt(p), answer=p.reference) for p in problems]
    ver = FailingVerifier(task.prompt(problems[2]), scripted, seed=1)
    config = inprocess_config("beam", SMALL_PARAMS["beam"])
    config.engine.max_batch_requests = 1  # the bad request alone in its batch
    summary = run_inprocess(config, problems, tmp_path, gen, ver, task=task)
    by_id = {line["id"]: line for line in read_results(tmp_path)}
    assert by_id["2"]["stop_reason"] == "error"
    assert "verifier exploded" in by_id["2"]["error"]
    assert all(by_id[i]["error"] is None for i in ("0", "1", "3"))
    assert summary["num_failed"] == 1 and summary["num_problems"] == 4


class TemplatedVerifier(ScriptedVerifier):
    """A scripted verifier whose input format adds tokens to one problem's prompt, as a PRM's
    chat template does, beyond what the token bound's slack allows."""

    def __init__(self, long_prompt: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.long_prompt = long_prompt

    def score(self, requests):
        results = super().score(requests)
        for request, result in zip(requests, results):
            if request.prompt == self.long_prompt:
                result.num_prompt_tokens += 5_000
        return results


def test_a_request_over_its_reservation_stops_only_its_problem(tmp_path):
    task, problems, gen, _ = scripted_job(num_problems=4)
    scripted = [ScriptedProblem(prompt=task.prompt(p), answer=p.reference) for p in problems]
    ver = TemplatedVerifier(task.prompt(problems[1]), scripted, seed=1)
    config = inprocess_config("beam", SMALL_PARAMS["beam"])
    config.budget.flops_per_problem = 10**12
    summary = run_inprocess(config, problems, tmp_path, gen, ver, task=task)
    by_id = {line["id"]: line for line in read_results(tmp_path)}
    assert by_id["1"]["stop_reason"] == "error" and "token bound" in by_id["1"]["error"]
    assert all(by_id[i]["error"] is None for i in ("0", "2", "3"))
    assert all(line["flops"] <= 10**12 for line in by_id.values())
    assert summary["num_failed"] == 1 and summary["num_problems"] == 4


def test_scoring_strategy_without_verifier_is_a_clear_error(tmp_path):
    task, problems, gen, _ = scripted_job(num_problems=1)
    config = inprocess_config("beam", SMALL_PARAMS["beam"])
    with pytest.raises(ValueError, match="no verifier"):
        run_inprocess(config, problems, tmp_path, gen, None, task=task)


def test_duplicate_problem_ids_are_rejected(tmp_path):
    task, problems, gen, ver = scripted_job(num_problems=2)
    with pytest.raises(ValueError, match="appears twice"):
        run_inprocess(inprocess_config(), [problems[0], problems[0]], tmp_path, gen, ver, task=task)


# -- on a real local Ray (one per module) ------------------------------------------------

def ray_config(scripted: list, strategy: str = "beam", **budget):
    """Scripted backends in actors: two generator replicas, one verifier, half a CPU each."""
    role = {"backend": "scripted", "num_cpus": 0.5, "kwargs": {"problems": scripted, "seed": 1}}
    return load_config(data={
        "search": {"strategy": strategy, "params": SMALL_PARAMS[strategy], "seed": 3},
        "generator": {**role, "num_replicas": 2}, "verifier": role, "budget": budget,
        "engine": {"max_batch_requests": 2, "max_in_flight_batches": 2},
        "output": {"progress": "off"}})


@pytest.mark.ray
def test_engine_on_ray_actors_with_budget(ray_runtime, tmp_path):
    from ponder.cluster.pools import build_ray_pools
    from ponder.engine.engine import Engine

    task, problems, gen, _ = scripted_job(num_problems=6)
    cap = 5_000_000  # twice what these searches need: the cap is checked, not binding
    config = ray_config(gen.problems, "beam", flops_per_problem=cap)
    pools = build_ray_pools(config, connect_ray=False)
    try:
        with Engine(config, task, pools=pools) as engine:
            summary = engine.run(problems, tmp_path / "a")
            again = engine.run(problems[:2], tmp_path / "b")  # the same actors serve a second job
        stats = pools.generator.stats()
    finally:
        pools.shutdown()
    lines = read_results(tmp_path / "a")
    assert sorted(line["id"] for line in lines) == [p.problem_id for p in problems]
    assert all(0 < line["flops"] <= line["budget_flops"] == cap for line in lines)
    assert all(line["correct"] == (line["answer"] == str(40 + int(line["id"]))) for line in lines)
    assert summary["num_solved"] >= 4 and again["num_problems"] == 2
    assert stats["num_calls"] >= 2 and stats["num_given_up"] == 0


@pytest.mark.ray
def test_ponder_solve_joins_a_running_ray(ray_runtime, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": ray_runtime.address}
    proc = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "solve", "--range", "0:4", "--out", str(out),
         "--set", "generator.backend=scripted", "--set", "generator.kwargs.instant_steps=4",
         "--set", "verifier.backend=scripted", "--set", "verifier.kwargs.instant=true",
         "--set", "generator.num_cpus=0.5", "--set", "verifier.num_cpus=0.5",
         "--set", "budget.flops_per_problem=2e7"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = read_results(out)
    assert sorted(line["id"] for line in lines) == ["0", "1", "2", "3"]
    assert all(0 < line["flops"] <= line["budget_flops"] for line in lines)
    assert json.loads((out / "summary.json").read_text())["num_problems"] == 4


# A folder of freshly trained weights to test instead of the shipped ones (`ponder train --out`).
WEIGHTS = os.environ.get("PONDER_TEST_WEIGHTS")


def embedded_weights_missing() -> bool:
    if WEIGHTS:
        return not (Path(WEIGHTS) / "verifier.safetensors").is_file()
    try:
        from ponder.models import checkpoint
    except ImportError:
        return True
    return not (Path(checkpoint.WEIGHTS_DIR) / "verifier.safetensors").is_file()


@pytest.mark.ray
@pytest.mark.skipif(embedded_weights_missing(), reason="embedded weights not shipped yet")
def test_embedded_models_solve_easy_game24_puzzles(ray_runtime, tmp_path):
    from ponder.cluster.pools import build_ray_pools
    from ponder.engine.engine import Engine
    from ponder.tasks import game24, get_task

    task = get_task("game24")
    problems = game24.load_puzzles()[:6]  # ranks 1-6 of 24.csv: solved by 99% of people
    weights = [f"{role}.model_path={WEIGHTS}" for role in ("generator", "verifier") if WEIGHTS]
    config = load_config(REPO / "configs" / "game24.yaml", [
        "generator.num_cpus=1", "verifier.num_cpus=1", "output.progress=off", *weights])
    pools = build_ray_pools(config, connect_ray=False)
    try:
        with Engine(config, task, pools=pools) as engine:
            summary = engine.run(problems, tmp_path)
    finally:
        pools.shutdown()
    lines = read_results(tmp_path)
    assert len(lines) == len(problems)
    by_id = {p.problem_id: p for p in problems}
    for line in lines:  # every answer checked again by the task's exact verifier
        assert line["correct"] == game24.verify(by_id[line["id"]], line["answer"])
        assert line["flops"] <= line["budget_flops"]
    assert summary["num_solved"] >= 1 and summary["num_verifiable"] == len(problems)
