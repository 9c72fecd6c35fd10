"""``ponder sweep``: grid expansion, resume, the table and plots, the CLI, and one scripted end-to-end sweep.

Most tests run the sweep with ``ScriptedCellRunner``, a fake engine that writes a run
directory through the real ``RunDir`` and counts its calls, so they need no Ray
and no model. The last test runs real strategies through the real engine loop
in-process on the scripted fake backends (``ponder.search.scripted``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ScriptedQATask, scripted_problems

from ponder.sweep import run as sweep
from ponder.engine.engine import run_inprocess
from ponder.sweep.frontier import TABLE_COLUMNS
from ponder.engine.results import ProblemRecord, TokenCounts, make_summary
from ponder.engine.rundir import TREES_FILE, RunDir, read_results
from ponder.sweep.run import cell_dir, run_sweep
from ponder.sweep.report import cell_sample_correctness, sample_correctness, tree_sample_correctness
from ponder.sweep.spec import DEFAULT_STRATEGIES, SweepError, expand_grid, load_sweep
from ponder.config import ConfigError
from ponder.search.scripted import ScriptedGenerator, ScriptedVerifier
from ponder.tasks.base import Problem

BASE = {"generator": {"backend": "scripted"}, "verifier": {"backend": "scripted"},
        "ray": {"mode": "inprocess"}, "search": {"strategy": "best_of_n", "params": {"n": 8}}}
PROBLEMS = [Problem(str(i), f"question {i}", reference=str(40 + i)) for i in range(6)]


def sweep_data(**grid) -> dict:
    return {"base": BASE, "grid": grid or {"strategy": ["best_of_n", "compute_optimal"],
                                           "budget.flops_per_problem": ["1e6", 4e6]}}


class ScriptedCellRunner:
    """A fake engine: per cell, a deterministic share of problems solved that grows with budget.

    Writes results.jsonl, summary.json and config.yaml with the engine's own writer;
    ``calls`` lists the cells it ran. ``interrupt_at`` raises KeyboardInterrupt half-way
    through that cell (after writing a partial summary, as the engine does);
    ``fail_at`` raises RuntimeError; ``with_candidates`` records each sample's correctness.
    """

    def __init__(self, interrupt_at: str | None = None, fail_at: str | None = None,
                 with_candidates: bool = False):
        self.calls: list[str] = []
        self.interrupt_at, self.fail_at = interrupt_at, fail_at
        self.with_candidates = with_candidates

    def solved(self, config, index: int) -> bool:
        bonus = 2.0 if config.search.strategy == "compute_optimal" else 1.0
        return index < round(len(PROBLEMS) * min(1.0, bonus * config.budget.flops_per_problem / 8e6))

    def __call__(self, config, problems, out_dir: Path, progress: bool) -> dict:
        self.calls.append(out_dir.name)
        if out_dir.name == self.fail_at:
            raise RuntimeError("replica died")
        spend = int(0.75 * config.budget.flops_per_problem)
        run_dir = RunDir(out_dir)
        run_dir.write_config(config.to_dict())
        with run_dir.open_results() as writer:
            for i, problem in enumerate(problems):
                if out_dir.name == self.interrupt_at and i == len(problems) // 2:
                    run_dir.write_summary(self.summary(writer, config, spend, len(problems)))
                    raise KeyboardInterrupt
                correct = self.solved(config, i)
                writer.write(ProblemRecord(
                    id=problem.problem_id, problem=problem.problem, answer=problem.reference if correct else "0",
                    trace=[], correct=correct, score=0.5, flops=spend, budget_flops=config.budget.flops_per_problem,
                    flops_by_model={"generator": spend}, stop_reason="done",
                    tokens={"generator": TokenCounts(10, 2, 5)}, num_nodes=3))
            summary = self.summary(writer, config, spend, len(problems))
        run_dir.write_summary(summary)
        if self.with_candidates:
            self.add_candidates(out_dir)
        return summary

    @staticmethod
    def summary(writer, config, spend: int, num_requested: int) -> dict:
        return make_summary(writer.totals, total_flops=spend * writer.totals.num_problems,
                            flops_by_model={}, wall_seconds=0.1, strategy=config.search.strategy,
                            strategy_params=config.search.params, budget={}, task="game24",
                            num_requested=num_requested)

    @staticmethod
    def add_candidates(out_dir: Path) -> None:
        # Problem i's 16 samples: i + 1 of them correct, so coverage@k is known exactly.
        lines = read_results(out_dir)
        for i, line in enumerate(lines):
            line["candidates"] = [{"answer": "x", "correct": j <= i} for j in range(16)]
        (out_dir / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def run(spec, out, runner, **kwargs):
    return run_sweep(spec, out, problems=PROBLEMS, task=None if "task" in kwargs else _task(),
                     run_cell=runner, progress=False, log=lambda line: None, **kwargs)


def _task():
    from ponder.tasks import get_task

    return get_task("game24")


# -- the sweep file ---------------------------------------------------------------------------

def test_grid_expands_strategies_by_budgets_by_models():
    data = sweep_data(strategy=["best_of_n", "compute_optimal"], **{
        "budget.flops_per_problem": ["1e6", 4e6], "generator.model_path": [None, "/models/big-one/"]})
    data["strategy_params"] = {"compute_optimal": {"num_probe_samples": 2}}
    cells = expand_grid(load_sweep(data=data))
    assert [c.name for c in cells] == [
        "best_of_n__flops1e06__model-default", "best_of_n__flops1e06__model-big-one",
        "best_of_n__flops4e06__model-default", "best_of_n__flops4e06__model-big-one",
        "compute_optimal__flops1e06__model-default", "compute_optimal__flops1e06__model-big-one",
        "compute_optimal__flops4e06__model-default", "compute_optimal__flops4e06__model-big-one"]
    assert [(c.strategy, c.budget, c.model) for c in cells[:2]] == [
        ("best_of_n", 1_000_000, "scripted"), ("best_of_n", 1_000_000, "/models/big-one/")]
    # The base's own strategy keeps the base's params; another strategy gets only its own.
    assert cells[0].config.search.params == {"n": 8}
    assert cells[4].config.search.params == {"num_probe_samples": 2}
    assert cells[5].other_axes() == ""


def test_a_grid_without_strategies_runs_best_of_n_beside_compute_optimal():
    cells = expand_grid(load_sweep(data={"base": BASE, "grid": {"budget": [1e6]}}))
    assert [c.strategy for c in cells] == list(DEFAULT_STRATEGIES)
    assert {"best_of_n", "compute_optimal"} <= set(DEFAULT_STRATEGIES)


def test_extra_axes_name_their_cells_and_set_their_values():
    data = sweep_data(strategy=["beam"], budget=[2e6], **{"search.params.beam_width": [2, 4]})
    cells = expand_grid(load_sweep(data=data))
    assert [c.name for c in cells] == ["beam__flops2e06__beam_width-2", "beam__flops2e06__beam_width-4"]
    assert [c.config.search.params["beam_width"] for c in cells] == [2, 4]
    assert cells[1].other_axes() == "search.params.beam_width=4"


@pytest.mark.parametrize("data,match", [
    ({"grid": {"budget": [1]}, "bogus": 1}, "unknown sweep key 'bogus'; valid keys: base, set"),
    ({"grid": {"strategy": ["beam"]}}, "grid needs budget.flops_per_problem"),
    ({"grid": {"budget": [1], "task.name": ["countdown"]}}, "the task section is one for the whole sweep"),
    ({"grid": {"budget": 1e6}}, "grid.budget must be a non-empty list"),
    ({"grid": {"budget": [1e6, 1e6]}}, "lists a value twice"),
    ({"grid": {"budget": [1], "search.strategy": ["beam"], "strategy": ["mcts"]}}, "names 'search.strategy' twice"),
    ({"grid": {"strategy": ["beam"], "budget": [1]}, "strategy_params": {"bets_of_n": {}}},
     "strategy_params.bets_of_n: unknown strategy 'bets_of_n'; valid: beam, best_of_n"),
    ({"grid": {"budget": [1]}, "range": 54059}, "range must be a string, got 54059 (quote it"),
    ({"grid": {"strategy": ["nope"], "budget": [1]}}, "sweep cell nope__flops1: search.strategy: unknown strategy"),
    ({"grid": {"strategy": ["beam"], "budget": [-5]}}, "budget.flops_per_problem must be positive"),
    ({"grid": {"strategy": ["best_of_n"], "budget": [1]}, "strategy_params": {"best_of_n": {"width": 2}}},
     "sweep cell best_of_n__flops1: search.params: unknown search parameter"),
])
def test_bad_sweep_files_name_the_problem(data, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace("[", r"\[")):
        load_sweep(data={"base": BASE, **data})


def test_base_file_next_to_the_sweep_and_command_line_overrides(tmp_path):
    # The base file's own base: chain is followed (base.yaml -> root.yaml).
    (tmp_path / "root.yaml").write_text(yaml.safe_dump({**BASE, "engine": {"max_batch_tokens": 999}}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"base": "root.yaml", "search": BASE["search"]}))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"base": "base.yaml", "set": ["search.seed=3"],
                                          "grid": {"strategy": ["best_of_n"], "budget": [1e6]}}))
    spec = load_sweep(sweep_file, ["grid.budget.flops_per_problem=[2e6, 3e6]",
                                   "strategy_params.best_of_n.n=4", "engine.max_batch_requests=5",
                                   "range=2:4"])
    cells = expand_grid(spec)
    assert [c.budget for c in cells] == [2_000_000, 3_000_000]
    assert cells[0].config.search.params == {"n": 4}
    assert (cells[0].config.search.seed, cells[0].config.engine.max_batch_requests) == (3, 5)
    assert (cells[0].config.engine.max_batch_tokens, cells[0].config.generator.backend) == (999, "scripted")
    # Narrowing the grid leaves params of strategies it no longer runs unused, not an error.
    narrowed = load_sweep(data={"base": BASE, "grid": {"strategy": ["beam"], "budget": [1]},
                                "strategy_params": {"mcts": {"num_simulations": 4}}})
    assert [c.strategy for c in expand_grid(narrowed)] == ["beam"]
    assert spec.range == "2:4"
    with pytest.raises(SweepError, match="base config 'missing.yaml' not found"):
        load_sweep(data={"base": "missing.yaml", "grid": {"budget": [1]}})
    # An override of an axis keeps its place (safe_dump wrote budget first), so the cells it
    # keeps keep their names and results; a new axis goes last.
    reordered = load_sweep(sweep_file, ["grid.budget=[1e6]", "grid.model=[null]"])
    assert [c.name for c in expand_grid(reordered)] == ["flops1e06__best_of_n__model-default"]
    with pytest.raises(SweepError, match="base.yaml' is not a sweep file: it has no grid"):
        load_sweep(tmp_path / "base.yaml")  # a solve config given to ponder sweep


def test_by_budget_params_grow_a_strategy_with_its_budget():
    spec = load_sweep(data={"base": BASE, "grid": {"strategy": ["beam", "best_of_n"], "budget": ["1e6", 4e6, None]},
                            "strategy_params": {
                                "beam": {"expansion_factor": 2, "by_budget": {
                                    1e6: {"beam_width": 1}, "4_000_000": {"beam_width": 3, "expansion_factor": 4},
                                    None: {"beam_width": 8}, "1e9": {"beam_width": 99}}},  # 1e9: not in the grid
                                "best_of_n": {"n": 1024, "by_budget": {"1e6": {"n": 4}}}}})
    params = {(c.strategy, c.budget): c.config.search.params for c in expand_grid(spec)}
    assert params[("beam", 1_000_000)] == {"expansion_factor": 2, "beam_width": 1}
    assert params[("beam", 4_000_000)] == {"expansion_factor": 4, "beam_width": 3}
    assert params[("beam", None)] == {"expansion_factor": 2, "beam_width": 8}
    assert params[("best_of_n", 1_000_000)] == {"n": 4}
    assert params[("best_of_n", 4_000_000)] == params[("best_of_n", None)] == {"n": 1024}
    with pytest.raises(SweepError, match="strategy_params.beam.by_budget: 'lots' is not a budget"):
        load_sweep(data={"base": BASE, "grid": {"budget": [1e6]},
                         "strategy_params": {"beam": {"by_budget": {"lots": {"beam_width": 2}}}}})
    with pytest.raises(ConfigError, match="sweep cell beam__flops1e06: .*beam_width"):
        load_sweep(data={"base": BASE, "grid": {"strategy": ["beam"], "budget": [1e6]},
                         "strategy_params": {"beam": {"by_budget": {1e6: {"beam_width": 0}}}}})


# -- running and resuming ---------------------------------------------------------------------

def test_resume_skips_finished_cells_and_reruns_changed_or_missing_ones(tmp_path):
    spec = load_sweep(data=sweep_data())
    names = [c.name for c in expand_grid(spec)]
    first = ScriptedCellRunner()
    outcome = run(spec, tmp_path, first)
    assert first.calls == names and outcome.count("ran") == 4

    again = ScriptedCellRunner()
    outcome = run(spec, tmp_path, again)
    assert again.calls == [] and outcome.count("skipped") == 4

    (tmp_path / "cells" / names[1] / "summary.json").unlink()
    changed = load_sweep(data={**sweep_data(), "strategy_params": {"compute_optimal": {"num_probe_samples": 2}}})
    third = ScriptedCellRunner()
    run(changed, tmp_path, third)
    assert third.calls == [names[1], names[2], names[3]]  # missing summary, then compute_optimal's new params

    # Where and how it ran does not matter: more replicas, another Ray, other progress output.
    moved = load_sweep(data={**sweep_data(), "strategy_params": {"compute_optimal": {"num_probe_samples": 2}}},
                       overrides=["generator.num_replicas=3", "ray.address=auto", "output.progress=lines"])
    assert expand_grid(moved)[0].config.generator.num_replicas == 3
    fourth = ScriptedCellRunner()
    run(moved, tmp_path, fourth)
    assert fourth.calls == []


def test_new_weights_at_the_same_path_run_the_cells_that_load_them_again(tmp_path):
    from ponder.sweep.fingerprint import embedded_weights_dir, weights_signature

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "verifier.safetensors").write_bytes(b"old verifier")
    spec = load_sweep(data=sweep_data(), overrides=[f"verifier.model_path={weights}"])
    out = tmp_path / "sweep"
    run(spec, out, ScriptedCellRunner())
    (weights / "verifier.safetensors").write_bytes(b"old verifier")  # rewritten, same bytes: still done
    same = ScriptedCellRunner()
    run(spec, out, same)
    assert same.calls == []
    (weights / "verifier.safetensors").write_bytes(b"new verifier")  # ponder train wrote new weights
    retrained = ScriptedCellRunner()
    run(spec, out, retrained)
    assert retrained.calls == [c.name for c in expand_grid(spec)]
    # The embedded backend without a model_path loads the shipped weights: those are what count.
    shipped = embedded_weights_dir()
    assert shipped is not None and shipped.name == "weights" and shipped.parent.name == "models"
    assert weights_signature({"backend": "embedded", "model_path": None}) == weights_signature(
        {"backend": "embedded", "model_path": str(shipped)}) is not None
    assert weights_signature({"backend": "vllm", "model_path": "Qwen/Qwen2.5-Math-PRM-7B"}) is None  # a hub id


def test_an_interrupted_cell_runs_again_and_the_ones_before_it_do_not(tmp_path):
    spec = load_sweep(data=sweep_data())
    names = [c.name for c in expand_grid(spec)]
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path, ScriptedCellRunner(interrupt_at=names[2]))
    partial = json.loads((tmp_path / "cells" / names[2] / "summary.json").read_text())
    assert partial["num_problems"] < partial["num_requested"]
    resumed = ScriptedCellRunner()
    run(spec, tmp_path, resumed)
    assert resumed.calls == names[2:]


def test_keep_going_records_a_failed_cell_and_runs_the_rest(tmp_path):
    spec = load_sweep(data=sweep_data())
    names = [c.name for c in expand_grid(spec)]
    with pytest.raises(RuntimeError, match="replica died"):
        run(spec, tmp_path / "strict", ScriptedCellRunner(fail_at=names[0]))
    runner = ScriptedCellRunner(fail_at=names[0])
    outcome = run(spec, tmp_path / "lenient", runner, keep_going=True)
    assert runner.calls == names
    assert outcome.statuses[names[0]] == "failed" and "replica died" in outcome.errors[names[0]]
    assert len(outcome.report.rows) == 3


def test_sweep_writes_table_frontier_analysis_and_plot(tmp_path):
    spec = load_sweep(data=sweep_data(strategy=["best_of_n", "compute_optimal"], budget=[1e6, 2e6, 4e6, 8e6]))
    runner = ScriptedCellRunner()
    outcome = run(spec, tmp_path, runner)
    for frame in (pd.read_csv(tmp_path / "table.csv"), pd.read_parquet(tmp_path / "table.parquet")):
        assert tuple(frame.columns) == TABLE_COLUMNS and len(frame) == 8
    frame = pd.read_csv(tmp_path / "table.csv").set_index("cell")
    for cell in expand_grid(spec):
        summary = json.loads((cell_dir(tmp_path, cell) / "summary.json").read_text())
        got = frame.loc[cell.name]
        assert (got.strategy, got.budget, got.num_solved) == (cell.strategy, cell.budget, summary["num_solved"])
        assert got.accuracy == pytest.approx(summary["accuracy"])
        assert got.flops_per_problem_mean == pytest.approx(0.75 * cell.budget)
        assert (got.generated_tokens, got.prompt_tokens) == (5 * len(PROBLEMS), 10 * len(PROBLEMS))
    # The fake solves 2x more with compute_optimal at each budget: it owns the frontier.
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert {row["strategy"] for row in analysis["frontier"]} == {"compute_optimal"}
    assert all(b["strategy"] == "compute_optimal" for b in analysis["best_per_budget"][:2])
    assert (tmp_path / "accuracy_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(tmp_path / "frontier.csv")) == len(outcome.report.front)
    # Without per-sample results, the fit falls back to best-of-N accuracy vs relative FLOPs.
    (coverage,) = outcome.report.coverage
    assert coverage.source == "accuracy_vs_relative_flops" and coverage.k == [1.0, 2.0, 4.0, 8.0]


def test_coverage_comes_from_per_sample_candidates_when_recorded(tmp_path):
    spec = load_sweep(data=sweep_data(strategy=["best_of_n"], budget=[4e6, 8e6]))
    outcome = run(spec, tmp_path, ScriptedCellRunner(with_candidates=True))
    (coverage,) = outcome.report.coverage
    assert coverage.source == "coverage" and coverage.k == [1, 2, 4, 8, 16]
    # Problem i has i + 1 correct of 16 samples: coverage@1 is the mean share.
    assert coverage.coverage[0] == pytest.approx(sum((i + 1) / 16 for i in range(6)) / 6)
    assert coverage.fit is not None and coverage.fit.a < 0 and coverage.fit.b < 0
    assert (tmp_path / "coverage.png").is_file()
    assert sample_correctness({"candidates": [True, {"correct": None}, {"correct": True}]}) == [True, False, True]
    assert sample_correctness({"id": "1"}) is None


def test_tree_sample_correctness_reads_each_sample_under_the_root():
    # [parent, text, score, status, answer, visits, value]; status 2 expanded, 3 terminal, 0 open
    nodes = [[-1, "", None, 2, None, 0, 0.0],
             [0, "a", 0.5, 2, None, 0, 0.0], [1, "Answer: 24", 0.5, 3, "24", 0, 0.0],  # right
             [0, "b", 0.5, 2, None, 0, 0.0], [3, "Answer: 7", 0.5, 3, "7", 0, 0.0],  # wrong
             [0, "c", 0.5, 0, None, 0, 0.0],  # cut off before its answer: wrong
             [0, "d", 0.5, 2, None, 0, 0.0], [6, "Answer: ?", 0.5, 3, "?", 0, 0.0],  # unknown
             [0, "e", 0.5, 2, None, 0, 0.0], [8, "Answer: 7", 0.5, 3, "7", 0, 0.0],
             [8, "Answer: 24", 0.5, 3, "24", 0, 0.0]]  # a wrong and a right leaf: right
    record = {"nodes": nodes, "verdicts": {"24": True, "7": False, "?": None}}
    assert tree_sample_correctness(record) == [True, False, False, None, True]
    assert tree_sample_correctness({"nodes": nodes[:1], "verdicts": {}}) == []


def test_cell_sample_correctness_falls_back_to_trees_and_needs_a_verdict(tmp_path):
    ScriptedCellRunner()(load_config_data(), PROBLEMS[:2], tmp_path, False)  # results lines, no candidates
    assert cell_sample_correctness(tmp_path) is None  # no trees.jsonl either
    tree = {"problem_id": "0", "nodes": [[-1, "", None, 2, None, 0, 0.0], [0, "x", 0.1, 3, "41", 0, 0.0],
                                         [0, "y", 0.1, 3, "40", 0, 0.0]], "verdicts": {"41": False, "40": True}}
    lines = [tree, {**tree, "problem_id": "1", "verdicts": {"41": True, "40": True}}]
    (tmp_path / TREES_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert cell_sample_correctness(tmp_path) == [[False, True], [True, True]]
    unknown = [{**line, "verdicts": {"41": None, "40": None}} for line in lines]
    (tmp_path / TREES_FILE).write_text("".join(json.dumps(line) + "\n" for line in unknown))
    assert cell_sample_correctness(tmp_path) is None  # a task that cannot verify has no coverage


def load_config_data():
    from ponder.config import load_config

    return load_config(data={**BASE, "budget": {"flops_per_problem": 4e6}})


def test_cli_dry_run_and_analyze_only(tmp_path, capsys):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({**sweep_data(), "range": "0:3"}))
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["-c", str(sweep_file), "-o", str(out), "--dry-run"])
    assert sweep.run(args) == 0
    assert "4 cells, 0 done, 3 problems each" in capsys.readouterr().out
    spec = load_sweep(sweep_file)
    problems = sweep.load_sweep_problems(spec, expand_grid(spec)[0].config, _task())
    run_sweep(spec, out, problems=problems, task=_task(), run_cell=ScriptedCellRunner(),
              progress=False, log=lambda line: None)
    (out / "table.csv").unlink()
    assert sweep.run(parser.parse_args(["-c", str(sweep_file), "-o", str(out), "--dry-run"])) == 0
    assert "4 cells, 4 done" in capsys.readouterr().out
    assert sweep.run(parser.parse_args(["-c", str(sweep_file), "-o", str(out), "--analyze-only"])) == 0
    assert "frontier: compute_optimal" in capsys.readouterr().out
    assert len(pd.read_csv(out / "table.csv")) == 4


# -- end to end on the scripted backend -----------------------------------------------------

def test_end_to_end_sweep_on_the_scripted_backend(tmp_path):
    task = ScriptedQATask()
    problems, scripted = scripted_problems(task, 8, p_correct=(0.9, 0.5, 0.35, 0.2))
    generator, verifier = ScriptedGenerator(scripted, seed=1), ScriptedVerifier(scripted, seed=1)
    spec = load_sweep(data={
        "base": {**BASE, "engine": {"max_batch_requests": 16}},
        "grid": {"strategy": ["best_of_n", "compute_optimal"], "budget": [4e5, 1.6e6, 6.4e6]},
        "strategy_params": {"best_of_n": {"n": 64, "max_solution_tokens": 48},
                            "compute_optimal": {"num_probe_samples": 4, "max_num_samples": 64,
                                                "max_solution_tokens": 48, "max_step_tokens": 16}}})

    def run_cell(config, cell_problems, out_dir, progress):
        return run_inprocess(config, cell_problems, out_dir, generator, verifier, task=task)

    outcome = run_sweep(spec, tmp_path, problems=problems, task=task, run_cell=run_cell,
                        progress=False, log=lambda line: None)
    rows = {(r.strategy, r.budget): r for r in outcome.report.rows}
    assert len(rows) == 6 and outcome.count("ran") == 6
    for (strategy, budget), row in rows.items():
        lines = read_results(cell_dir(tmp_path, next(c for c in expand_grid(spec) if c.name == row.cell)))
        assert len(lines) == row.num_problems == len(problems)
        assert row.num_solved == sum(bool(line["correct"]) for line in lines)
        assert row.flops_per_problem_mean <= budget  # compute_optimal moves FLOPs, never adds any
        if strategy == "best_of_n":
            assert all(line["flops"] <= budget for line in lines)
    best_of_n = [rows[("best_of_n", b)] for b in (4e5, 1.6e6, 6.4e6)]
    assert best_of_n[0].flops_per_problem_mean < best_of_n[1].flops_per_problem_mean < best_of_n[2].flops_per_problem_mean
    assert best_of_n[2].accuracy > best_of_n[0].accuracy  # more samples, more problems solved
    assert outcome.report.front and not math.isnan(outcome.report.front[-1].accuracy)
    # Coverage is the best-of-N samples' own correctness, read back from the largest cell's trees.
    (coverage,) = outcome.report.coverage
    assert coverage.source == "coverage" and coverage.k[0] == 1
    assert all(x <= y for x, y in zip(coverage.coverage, coverage.coverage[1:]))
    largest = cell_dir(tmp_path, next(c for c in expand_grid(spec) if c.name == best_of_n[2].cell))
    trees = {r["problem_id"]: tree_sample_correctness(r) for r in RunDir(largest).read_trees()}
    assert coverage.k[-1] == min(len(samples) for samples in trees.values()) > 1
    for line in read_results(largest):  # a right pick is one of the samples: some sample is right
        assert any(trees[line["id"]]) or not line["correct"]
    assert coverage.coverage[0] == pytest.approx(
        sum(sum(s) / len(s) for s in trees.values()) / len(trees))  # coverage@1: the mean share right
    calls = generator.num_calls
    again = run_sweep(spec, tmp_path, problems=problems, task=task, run_cell=run_cell,
                      progress=False, log=lambda line: None)
    assert again.count("skipped") == 6 and generator.num_calls == calls


@pytest.mark.parametrize("name", ["sweep_game24.yaml", "sweep_game24_quick.yaml"])
def test_shipped_sweep_configs_load_and_run_compute_optimal_beside_best_of_n(name):
    spec = load_sweep(Path(__file__).resolve().parents[1] / "configs" / name)
    cells = expand_grid(spec)
    budgets = {c.budget for c in cells}
    for strategy in ("best_of_n", "compute_optimal"):
        assert {c.budget for c in cells if c.strategy == strategy} == budgets
    assert all(c.config.search.params for c in cells) and spec.range and spec.out
    beam = sorted((c.budget, c.config.search.params["beam_width"]) for c in cells if c.strategy == "beam")
    assert [w for _, w in beam] == sorted(w for _, w in beam) and beam[0][1] < beam[-1][1]  # grows with the cap


def test_default_runner_reuses_one_engine_while_the_models_stay_the_same(tmp_path, monkeypatch):
    # Config-built in-process pools on the scripted backend's instant mode (no problems to
    # know): the real Engine, built once per distinct model config, not once per cell.
    import ponder.engine.engine as engine_module

    built = []

    class CountingEngine(engine_module.Engine):
        def __init__(self, *args, **kwargs):
            built.append(args[0].generator.kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sweep, "Engine", CountingEngine)  # ponder.sweep.run's own name for it
    base = {**BASE, "generator": {"backend": "scripted", "kwargs": {"instant_steps": 2}},
            "verifier": {"backend": "scripted", "kwargs": {"instant": True}}}
    spec = load_sweep(data={"base": base, "grid": {
        "generator.kwargs.instant_steps": [2, 3], "strategy": ["best_of_n", "beam"], "budget": [None]},
        "strategy_params": {"best_of_n": {"n": 4}, "beam": {"beam_width": 2, "expansion_factor": 2}}})
    problems = [Problem(str(i), f"question {i}", reference="0") for i in range(3)]
    outcome = run_sweep(spec, tmp_path, problems=problems, task=ScriptedQATask(), progress=False,
                        log=lambda line: None)
    assert outcome.count("ran") == 4
    assert built == [{"instant_steps": 2}, {"instant_steps": 3}]
    for cell in expand_grid(spec):
        lines = read_results(cell_dir(tmp_path, cell))
        summary = json.loads((cell_dir(tmp_path, cell) / "summary.json").read_text())
        assert len(lines) == 3 and summary["strategy"] == cell.strategy  # the reused engine ran this cell's search
        # instant mode's answer line comes after instant_steps - 1 generic steps
        assert all(len(line["trace"]) == cell.config.generator.kwargs["instant_steps"] for line in lines)
