"""Sweep analysis: table rows, the compute-optimal frontier, pass@k, the power-law fit, the plots."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.sweep.frontier import (TABLE_COLUMNS, TableRow, best_per_budget, coverage_curve,
                                     fit_power_law, frontier_accuracy, pareto_front, pass_at_k,
                                     table_frame, table_row, write_table)
from ponder.sweep.plot import plot_accuracy_vs_flops, plot_coverage
from ponder.sweep.report import CoverageData

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(strategy: str, flops: float, accuracy: float | None, budget: float | None = None,
        model: str = "m") -> TableRow:
    return TableRow(cell=f"{strategy}-{flops:g}", strategy=strategy, budget=budget, model=model,
                    accuracy=accuracy, num_solved=0, num_problems=10, flops_spent=int(10 * flops),
                    flops_per_problem_mean=flops, generated_tokens=0, prompt_tokens=0, wall_seconds=0.0)


def test_table_row_reads_a_summary():
    summary = {"num_problems": 4, "num_solved": 3, "accuracy": 0.75, "total_flops": 1000,
               "wall_seconds": 2.5, "tokens": {"generator": {"prompt": 40, "cached": 10, "generated": 7},
                                               "verifier": {"prompt": 5, "cached": 0, "generated": 0}}}
    r = table_row("beam__flops1e3", "beam", 1000, "embedded", summary, axes="seed=1")
    assert (r.accuracy, r.num_solved, r.num_problems, r.flops_spent) == (0.75, 3, 4, 1000)
    assert r.flops_per_problem_mean == 250.0
    assert (r.generated_tokens, r.prompt_tokens, r.wall_seconds) == (7, 45, 2.5)
    assert (r.budget, r.axes) == (1000.0, "seed=1")


def test_pareto_front_keeps_only_undominated_points():
    rows = [row("best_of_n", 1e9, 0.2), row("best_of_n", 4e9, 0.3), row("best_of_n", 1.6e10, 0.35),
            row("beam", 1e9, 0.25), row("beam", 4e9, 0.45), row("beam", 1.6e10, 0.44),
            row("compute_optimal", 2e9, 0.4), row("compute_optimal", 8e9, 0.45),
            row("mcts", 3e9, None)]
    front = pareto_front(rows)
    assert [(r.strategy, r.flops_per_problem_mean) for r in front] == [
        ("beam", 1e9), ("compute_optimal", 2e9), ("beam", 4e9)]
    # The step function: the best accuracy reached with at most that much compute.
    assert frontier_accuracy(front, 5e8) is None
    assert frontier_accuracy(front, 1.5e9) == 0.25
    assert frontier_accuracy(front, 1e11) == 0.45


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 10)), min_size=1, max_size=25))
def test_pareto_front_matches_the_definition(points):
    rows = [row(f"s{i}", float(f), a / 10) for i, (f, a) in enumerate(points)]
    front = pareto_front(rows)

    def beaten(r: TableRow) -> bool:  # some row as cheap is better, or as good and cheaper
        return any(o.flops_per_problem_mean <= r.flops_per_problem_mean and o.accuracy > r.accuracy
                   or o.flops_per_problem_mean < r.flops_per_problem_mean and o.accuracy >= r.accuracy
                   for o in rows)

    assert all(not beaten(r) for r in front)
    front_points = {(r.flops_per_problem_mean, r.accuracy) for r in front}
    assert all((r.flops_per_problem_mean, r.accuracy) in front_points for r in rows if not beaten(r))
    for f in {r.flops_per_problem_mean for r in rows}:
        assert frontier_accuracy(front, f) == max(r.accuracy for r in rows if r.flops_per_problem_mean <= f)


def test_best_per_budget_prefers_accuracy_then_less_compute():
    rows = [row("best_of_n", 9e8, 0.3, budget=1e9), row("beam", 8e8, 0.3, budget=1e9),
            row("compute_optimal", 9e8, 0.2, budget=1e9), row("best_of_n", 3e9, 0.5, budget=4e9),
            row("beam", 3e9, 0.6, budget=4e9, model="other")]
    best = best_per_budget(rows)
    assert best[("m", 1e9)].strategy == "beam"
    assert best[("m", 4e9)].strategy == "best_of_n"
    assert best[("other", 4e9)].strategy == "beam"


def test_pass_at_k_matches_counting_subsets():
    for n, c in [(5, 0), (5, 1), (6, 2), (7, 7), (8, 3)]:
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            exact = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError, match="k=9"):
        pass_at_k(8, 2, 9)


def test_coverage_curve_averages_problems_at_powers_of_two():
    problems = [[False, True, False, False], [False] * 4, [True] * 4]
    ks, coverage = coverage_curve(problems)
    assert ks.tolist() == [1, 2, 4]
    assert coverage.tolist() == pytest.approx([(0.25 + 0 + 1) / 3, (0.5 + 0 + 1) / 3, 2 / 3])
    # The fewest samples any problem has ends the curve even when not a power of two.
    ks, coverage = coverage_curve([[False, True, False, False, False, False], [True, False, False, False, False]])
    assert ks.tolist() == [1, 2, 4, 5]
    assert coverage[-1] == pytest.approx((1 - 1 / 6 + 1) / 2)  # 5 of 6 miss the right one 1/6 of the time


@pytest.mark.parametrize("a,b", [(-2.0, -0.4), (-0.7, -0.15), (-4.0, -0.8)])
def test_power_law_fit_recovers_known_parameters(a, b):
    k = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256], dtype=float)
    exact = fit_power_law(k, np.exp(a * k**b))
    assert exact.a == pytest.approx(a, rel=1e-6) and exact.b == pytest.approx(b, rel=1e-6)
    assert exact.rmse < 1e-9
    rng = np.random.default_rng(7)
    noisy = np.clip(np.exp(a * k**b) + rng.normal(0, 0.005, k.size), 1e-4, 1 - 1e-4)
    fit = fit_power_law(k, noisy)
    assert fit.a == pytest.approx(a, rel=0.1) and fit.b == pytest.approx(b, rel=0.1)
    assert fit.rmse < 0.01 and fit.max_abs_error < 0.02 and fit.num_points == k.size
    assert fit.predict([1.0]) == pytest.approx(np.exp(fit.a))


def test_power_law_fit_on_sampled_coverage():
    # Problems with Beta-distributed solve rates give coverage close to an exponentiated
    # power law (Brown et al. 2024); the fit should follow the estimated curve closely.
    rng = random.Random(3)
    problems = [[rng.random() < p for _ in range(128)] for p in np.random.default_rng(3).beta(0.4, 3, 300)]
    ks, coverage = coverage_curve(problems)
    fit = fit_power_law(ks, coverage)
    assert fit.a < 0 and fit.b < 0
    assert fit.rmse < 0.02
    assert np.all(np.diff(fit.predict(ks)) > 0)


def test_power_law_fit_rejects_data_it_cannot_fit():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        fit_power_law([1, 2, 4], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="needs 3 k values"):  # two points fit exactly, error 0
        fit_power_law([1, 2, 4, 8], [0.2, 0.3, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([0, 2, 4], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="equal length"):
        fit_power_law([1, 2], [0.1, 0.2, 0.3])


def test_table_files_have_the_columns(tmp_path):
    rows = [row("beam", 2e9, 0.5, budget=4e9), row("best_of_n", 1e9, None, budget=None)]
    csv_path, parquet_path = write_table(rows, tmp_path)
    import pandas as pd

    for frame in (pd.read_csv(csv_path), pd.read_parquet(parquet_path)):
        assert tuple(frame.columns) == TABLE_COLUMNS
        assert frame["strategy"].tolist() == ["beam", "best_of_n"]
        assert frame["accuracy"].iloc[0] == 0.5 and math.isnan(frame["accuracy"].iloc[1])
        assert math.isnan(frame["budget"].iloc[1])
    assert len(table_frame([])) == 0


def _assert_png(path, min_size=(200, 200)):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1]
    assert image.std() > 0  # something was drawn


def test_plots_are_png_files(tmp_path):
    rows = [row(s, f, a) for s, pts in {"best_of_n": [(1e9, 0.2), (4e9, 0.3)],
                                        "beam": [(1e9, 0.25), (4e9, 0.45)]}.items() for f, a in pts]
    path = plot_accuracy_vs_flops(rows, pareto_front(rows), tmp_path / "sub" / "acc.png")
    _assert_png(path)
    k = np.array([1, 2, 4, 8, 16.0])
    coverage = np.exp(-1.5 * k**-0.5)
    data = CoverageData("m", "coverage", k.tolist(), coverage.tolist(), fit_power_law(k, coverage))
    _assert_png(plot_coverage([data], tmp_path / "cov.png"))


@pytest.mark.parametrize("low,high,expected", [
    (1.3e9, 7e9, {"2e9", "3e9", "5e9"}),  # within a decade: minor ticks carry the labels
    (4e8, 2e10, {"5e8", "1e9", "2e9", "1e10"}),  # two decades: powers of ten, 2 and 5
    (1e6, 1e11, {"1e7", "1e9"}),  # many decades: powers of ten only
])
def test_log_x_axis_is_labelled_on_any_range(low, high, expected):
    from ponder.sweep.plot import _log_x, _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots()
    ax.plot([low, high], [0, 1])
    _log_x(ax)
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)} - {""}
    plt.close(fig)
    assert expected <= labels, labels
    if high / low > 1e3:
        assert not any(label[0] in "2345" for label in labels), labels  # no crowded minor labels
