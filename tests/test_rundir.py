"""The run directory: one owner of its files; every JSONL reader skips a torn last line
(a run killed mid-write), and the FLOP ledger of a resumed job is rebuilt from its lines."""

from __future__ import annotations

import json

import pytest

from ponder.engine.checkpoint import ledger_with_finished
from ponder.engine.results import ProblemRecord, TokenCounts
from ponder.engine.rundir import RunDir, read_jsonl
from ponder.search.budget import BudgetManager
from ponder.tasks.base import Problem


def record(pid: str, flops: int = 10, correct: bool = True) -> ProblemRecord:
    return ProblemRecord(id=pid, problem=f"q{pid}", answer="4", trace=["x"], correct=correct, score=0.5,
                         flops=flops, budget_flops=100, flops_by_model={"generator": flops},
                         stop_reason="done", tokens={"generator": TokenCounts(3, 1, 2)}, num_nodes=2)


def test_read_jsonl_skips_a_torn_last_line_only(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a", "flops": 1}\n{"id": "b", "flops": 2}\n{"id": "c", "fl')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="results.jsonl:2: not a JSON line"):
        read_jsonl(path)


def test_results_torn_last_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    with run.open_results() as results:
        results.write(record("a"))
        results.write(record("b"))
    with open(run.results_path, "a") as f:
        f.write('{"id": "c", "probl')
    assert [r["id"] for r in run.read_results()] == ["a", "b"]
    assert list(run.read_finished()) == ["a", "b"]
    assert RunDir(tmp_path / "missing").read_finished() == {}


def test_results_reopened_start_over_from_the_finished_lines_with_their_totals(tmp_path):
    run = RunDir(tmp_path)
    with run.open_results() as results:
        for pid in "abc":
            results.write(record(pid, correct=pid != "b"))
    kept = [line for line in run.read_results() if line["id"] != "c"]
    with run.open_results(kept) as results:
        assert results.totals.num_problems == 2 and results.totals.num_solved == 1
        results.write(record("d"))
        assert results.totals.tokens["generator"].generated == 6
    assert [r["id"] for r in run.read_results()] == ["a", "b", "d"]
    assert ProblemRecord.from_dict(run.read_results()[0]) == record("a")


def test_trees_torn_last_line_is_skipped_and_the_last_tree_of_a_problem_kept(tmp_path):
    run = RunDir(tmp_path)
    with run.open_trees() as trees:
        trees.write({"problem_id": "a", "nodes": [1]})
        trees.write({"problem_id": "b", "nodes": []})
        trees.write({"problem_id": "a", "nodes": [2]})  # searched again after a resume
    with open(run.trees_path, "a") as f:
        f.write('{"problem_id": "torn')
    assert run.read_trees() == [{"problem_id": "a", "nodes": [2]}, {"problem_id": "b", "nodes": []}]
    assert RunDir(tmp_path / "missing").read_trees() == []


def test_problems_round_trip_and_a_torn_last_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    problems = [Problem("1", "1 2 3 4", "x"), Problem("2", "5 6 7 8", None)]
    run.write_problems(problems)
    assert run.read_problems() == problems
    with open(run.problems_path, "a") as f:
        f.write('{"id": "3", "prob')
    assert run.read_problems() == problems
    with pytest.raises(FileNotFoundError, match="holds no job to resume"):
        RunDir(tmp_path / "elsewhere").read_problems()


def test_config_and_summary_are_written_whole(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_config() is None and run.read_summary() is None
    run.write_config({"search": {"strategy": "beam"}})
    run.write_summary({"num_problems": 2})
    assert run.read_config() == {"search": {"strategy": "beam"}}
    assert run.read_summary() == {"num_problems": 2}
    assert json.loads(run.summary_path.read_text()) == {"num_problems": 2}
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "summary.json"]  # no temp files


def test_the_ledger_is_rebuilt_from_finished_lines(tmp_path):
    budget = BudgetManager(flops_total=1_000, flops_per_problem=100)
    budget.add_problem("a")
    lines = {"a": record("a", flops=30).to_dict(), "b": record("b", flops=20).to_dict()}
    rebuilt = ledger_with_finished(budget.to_state(), lines)
    assert rebuilt.spent("a") == 30 and rebuilt.spent("b") == 20  # b: not in the ledger yet
    assert rebuilt.job_spent == 50 and rebuilt.cap("b") == 100
    assert ledger_with_finished(budget.to_state(), {}).job_spent == 0
