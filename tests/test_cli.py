"""The ``ponder`` command as a user runs it: help, bad input, and a whole ``ponder solve``.

Each bad input must give exit status 2 and one line on stderr naming the problem,
with no traceback unless ``--debug``. Runs use ``ray.mode=inprocess`` and the
scripted fake backend (no model, no Ray); ``test_engine.py`` covers Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.cli import EXIT_USAGE, main
from ponder.engine.rundir import read_results
from ponder.search import iter_strategies
from ponder.tasks import game24

REPO = Path(__file__).resolve().parents[1]
SCRIPTED = [  # fake models that need no weights: generic steps, hash scores
    "--set", "ray.mode=inprocess",
    "--set", "generator.backend=scripted", "--set", "generator.kwargs.instant_steps=4",
    "--set", "verifier.backend=scripted", "--set", "verifier.kwargs.instant=true",
]


def ponder(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ponder solve: error: ")
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["solve", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "solve" in out and "TODO" not in out


def test_train_help_comes_from_the_training_module(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--gen-steps" in out and "never trained on" in out


def test_missing_problems_file(tmp_path):
    line = one_error_line(ponder("solve", "--problems", str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl" in line and "does not exist" in line


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "problem": "1 1 4 6"}\n\n{"id": "b", "problem": \n')
    line = one_error_line(ponder("solve", "--problems", str(path)))
    assert f"{path}:3:" in line and "invalid JSON" in line


def test_unknown_strategy_lists_the_valid_ones():
    line = one_error_line(ponder("solve", "--set", "search.strategy=alphago"))
    assert "'alphago'" in line and all(name in line for name in iter_strategies())


def test_unknown_backend_lists_the_valid_ones():
    line = one_error_line(ponder("solve", "--set", "verifier.backend=tgi"))
    assert "verifier.backend" in line and "embedded, hf, vllm, scripted" in line


@pytest.mark.parametrize("value", ["0", "-1e12"])
def test_non_positive_budget(value):
    line = one_error_line(ponder("solve", "--set", f"budget.flops_per_problem={value}"))
    assert "budget.flops_per_problem must be positive" in line


def test_missing_model_path():
    line = one_error_line(ponder("solve", "--set", "generator.backend=hf"))
    assert "generator.model_path is required for backend 'hf'" in line


def test_bad_config_file_and_override(tmp_path):
    line = one_error_line(ponder("solve", "--config", str(tmp_path / "none.yaml")))
    assert "cannot read config file" in line
    line = one_error_line(ponder("solve", "--set", "search.strategy"))
    assert "--set expects key=value" in line


def test_bad_range():
    line = one_error_line(ponder("solve", "--range", "10:2", *SCRIPTED))
    assert "'10:2'" in line


def test_debug_shows_the_traceback(tmp_path):
    proc = ponder("solve", "--problems", str(tmp_path / "nope.jsonl"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_solve_writes_results_and_summary_under_budget(tmp_path):
    cap = 10**8
    out = tmp_path / "run"
    proc = ponder("solve", "--range", "3:8", "--out", str(out), *SCRIPTED,
                  "--set", f"budget.flops_per_problem={cap}", "--set", "search.strategy=best_of_n",
                  "--set", "search.params={n: 64, max_solution_tokens: 80}")
    assert proc.returncode == 0, proc.stderr
    assert "strategy best_of_n" in proc.stdout and str(out / "summary.json") in proc.stdout
    lines = read_results(out)
    puzzles = {p.problem_id: p.problem for p in game24.load_puzzles()}
    assert sorted(line["id"] for line in lines) == ["3", "4", "5", "6", "7"]
    for line in lines:
        assert line["problem"] == puzzles[line["id"]]
        assert 0 < line["flops"] <= line["budget_flops"] == cap
        assert line["correct"] is False  # the fake generator's answers are not expressions for 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == 5 and summary["num_solved"] == 0
    assert summary["total_flops"] == sum(line["flops"] for line in lines)
    assert (out / "config.yaml").is_file()


def test_solve_reads_jsonl_problems(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": p}) + "\n"
                            for i, p in enumerate(["4 5 6 10", "1 2 3 4"])))
    out = tmp_path / "run"
    assert main(["solve", "--problems", str(path), "--out", str(out), "--no-progress", *SCRIPTED]) == 0
    assert sorted(line["id"] for line in read_results(out)) == ["q0", "q1"]


def test_import_ponder_stays_light():
    code = ("import sys, ponder; ponder.load_config; ponder.solve; "
            "heavy = [m for m in ('ray', 'torch') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_progress_lines_when_not_a_terminal(tmp_path):
    import io

    from ponder.engine.progress import Progress

    stream = io.StringIO()
    with Progress(4, "auto", interval_s=0.0, stream=stream) as progress:
        progress.update(1, 1, 1, flops=2_500_000)
        progress.update(2, 0, 2, flops=7 * 10**12)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[ponder] 1/4 problems, solved 1/1, 2.50e06 FLOPs")
    assert lines[-1].startswith("[ponder] 3/4 problems, solved 1/3, 7.00e12 FLOPs")


def test_resume_keeps_finished_problems(tmp_path):
    out = tmp_path / "run"
    args = ["solve", "--range", "0:3", "--out", str(out), "--no-progress", *SCRIPTED]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())
    lines = (out / "results.jsonl").read_text()
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert (out / "results.jsonl").read_text() == lines  # nothing searched twice
    assert again["num_problems"] == first["num_problems"] == 3
    assert again["total_flops"] == first["total_flops"]


def test_resume_needs_an_out_dir(capsys):
    assert main(["solve", "--resume", *SCRIPTED]) == EXIT_USAGE
    assert "--resume needs --out DIR" in capsys.readouterr().err


# -- ponder sweep ------------------------------------------------------------------------------

def scripted_sweep_file(tmp_path: Path) -> Path:
    """A sweep on the scripted fakes of benchmarks/_fakes.py (no model, no Ray), 8 problems."""
    problems, specs = [], []
    for i in range(8):  # easy to hard, so coverage grows with samples and the fit has points
        problems.append({"id": str(i), "problem": f"scripted problem {i}", "answer": str(100 + i)})
        specs.append({"prompt": f"Q{i}: scripted problem {i}\n", "answer": str(100 + i),
                      "num_steps": 3, "p_correct": (0.9, 0.6, 0.45, 0.3)[i % 4]})
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    fakes = "benchmarks._fakes:"
    sweep = {
        "base": {"task": {"name": fakes + "ScriptedQATask"}, "ray": {"mode": "inprocess"},
                 "generator": {"backend": fakes + "ScriptedLatencyGenerator",
                               "kwargs": {"problems": specs, "seed": 1}},
                 "verifier": {"backend": fakes + "ScriptedLatencyVerifier",
                              "kwargs": {"problems": specs, "seed": 1}}},
        "problems": str(tmp_path / "problems.jsonl"),
        "grid": {"strategy": ["best_of_n", "compute_optimal"], "budget": [4e5, 3.2e6]},
        "strategy_params": {"best_of_n": {"n": 64, "max_solution_tokens": 48},
                            "compute_optimal": {"num_probe_samples": 4, "max_num_samples": 64,
                                                "max_solution_tokens": 48, "max_step_tokens": 16}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return path


def test_sweep_help_documents_every_option():
    proc = ponder("sweep", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--config", "--out", "--problems", "--range", "--set", "--keep-going", "--dry-run",
                   "--analyze-only", "--no-progress", "--debug"):
        assert option in proc.stdout
    assert "resum" in proc.stdout  # says how to resume


def test_sweep_writes_table_plot_and_fit_and_a_second_run_skips_every_cell(tmp_path):
    import pandas as pd

    sweep_file, out = scripted_sweep_file(tmp_path), tmp_path / "out"
    first = ponder("sweep", "-c", str(sweep_file), "-o", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    for index, cell in enumerate(["best_of_n__flops4e05", "best_of_n__flops3.2e06",
                                  "compute_optimal__flops4e05", "compute_optimal__flops3.2e06"], 1):
        assert f"[sweep {index}/4] {cell}: running 8 problems" in first.stderr  # progress per cell
        assert f"[sweep {index}/4] {cell}: accuracy " in first.stderr
        assert len(read_results(out / "cells" / cell)) == 8
    assert "4 cells ran, 0 skipped (done), 0 failed" in first.stdout
    table = pd.read_csv(out / "table.csv")
    parquet = pd.read_parquet(out / "table.parquet")
    assert list(parquet.columns) == list(table.columns) and (parquet["axes"] == "").all()  # no other axis
    pd.testing.assert_frame_equal(table.drop(columns="axes"), parquet.drop(columns="axes"), check_dtype=False)
    assert sorted(zip(table.strategy, table.budget)) == [
        ("best_of_n", 4e5), ("best_of_n", 3.2e6), ("compute_optimal", 4e5), ("compute_optimal", 3.2e6)]
    assert (table.flops_per_problem_mean <= table.budget).all() and (table.wall_seconds > 0).all()
    best_of_n = table[table.strategy == "best_of_n"].sort_values("budget")
    assert best_of_n.accuracy.iloc[1] > best_of_n.accuracy.iloc[0]  # more FLOPs, more solved
    for name in ("accuracy_vs_flops.png", "coverage.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    (fit,) = json.loads((out / "analysis.json").read_text())["power_law"]
    assert fit["source"] == "coverage" and fit["fit"]["a"] < 0 and fit["fit"]["b"] < 0, fit
    assert f"exp({fit['fit']['a']:.3f} * k^{fit['fit']['b']:.3f})" in first.stdout  # the fit, reported
    results = {cell: (out / "cells" / cell / "results.jsonl").read_text() for cell in table.cell}

    again = ponder("sweep", "-c", str(sweep_file), "-o", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("done already, skipped") == 4 and "running" not in again.stderr
    assert "0 cells ran, 4 skipped (done), 0 failed" in again.stdout
    assert all((out / "cells" / c / "results.jsonl").read_text() == text for c, text in results.items())
    assert pd.read_csv(out / "table.csv").equals(table)

    more = ponder("sweep", "-c", str(sweep_file), "-o", str(out), "--no-progress",
                  "--set", "grid.budget=[4e5, 3.2e6, 1.28e7]")  # a new budget: only its cells run
    assert more.returncode == 0, more.stderr
    assert "2 cells ran, 4 skipped (done), 0 failed" in more.stdout
    assert len(pd.read_csv(out / "table.csv")) == 6


@pytest.mark.parametrize("args,message", [
    (["-c", "missing.yaml"], "cannot read sweep file 'missing.yaml'"),
    (["-c", "configs/game24.yaml"], "not a sweep file"),
    (["-c", "configs/sweep_game24_quick.yaml", "--set", "grid.strategy=[bestofn]"],
     "unknown strategy 'bestofn'; valid: beam, best_of_n"),
    (["-c", "configs/sweep_game24_quick.yaml", "--set", "grid.budget=[0]"],
     "budget.flops_per_problem must be positive or null"),
    (["-c", "configs/sweep_game24_quick.yaml", "--set", "grid.budget=1e9"],
     "grid.budget must be a non-empty list"),
    (["-c", "configs/sweep_game24_quick.yaml", "--set", "strategy_params.bestofn.n=4"],
     "unknown strategy 'bestofn'"),
    (["-c", "configs/sweep_game24_quick.yaml", "--range", "5000:6000", "--dry-run"],
     "problem range '5000:6000' selects nothing"),
])
def test_sweep_bad_input_is_one_line(args, message):
    proc = ponder("sweep", *args)
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ponder sweep: error: ") and message in line, line


@pytest.mark.ray
def test_sweep_on_a_local_ray_runs_each_cell_once(tmp_path):
    # The same sweep with the fakes in Ray actors (a local Ray of 2 CPUs that the command
    # starts and stops itself); the repo root goes on the actors' PYTHONPATH for benchmarks._fakes.
    import os

    sweep_file, out = scripted_sweep_file(tmp_path), tmp_path / "out"
    ray_args = ["--set", "ray.mode=ray", "--set", "ray.num_cpus=2", "--set", "generator.num_cpus=0.5",
                "--set", "verifier.num_cpus=0.5", "--set", f"ray.runtime_env.env_vars.PYTHONPATH={REPO}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ponder.cli", "sweep", "-c", str(sweep_file),
                               "-o", str(out), "--no-progress", *ray_args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first = sweep()
    assert first.returncode == 0, first.stderr[-2000:]
    assert "4 cells ran, 0 skipped (done), 0 failed" in first.stdout
    for name in ("table.csv", "table.parquet", "accuracy_vs_flops.png", "analysis.json"):
        assert (out / name).is_file()
    table = (out / "table.csv").read_text()
    again = sweep()  # every cell done: the same table
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 cells ran, 4 skipped (done), 0 failed" in again.stdout
    assert (out / "table.csv").read_text() == table
