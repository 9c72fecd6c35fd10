"""Analysis of a sweep: one table row per cell, the compute-optimal frontier, the coverage power law.

- ``table_row`` turns a cell's ``summary.json`` into a row of the accuracy-vs-FLOPs
  table; ``write_table`` writes the rows as CSV and parquet.
- ``pareto_front`` is the compute-optimal frontier: the cells no other cell beats
  with at most their FLOPs; ``best_per_budget`` names the winner of each budget.
- ``fit_power_law`` fits the exponentiated power law of Brown et al. (2024,
  "Large Language Monkeys"), ``coverage(k) = exp(a * k**b)`` with a < 0 and b < 0:
  coverage, the share of problems some of k samples solves, creeps towards 1 as
  k grows. ``pass_at_k`` is the unbiased per-problem estimate it is fitted to.

Pure numpy except ``write_table`` (pandas, pyarrow).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TABLE_CSV = "table.csv"
TABLE_PARQUET = "table.parquet"
MIN_FIT_POINTS = 3  # distinct k with 0 < coverage < 1 that a power-law fit needs


@dataclass(slots=True)
class TableRow:
    """One cell of a sweep: what it ran and what it got."""

    cell: str  # the cell's directory name under DIR/cells
    strategy: str
    budget: float | None  # budget.flops_per_problem; None = uncapped
    model: str  # generator.model_path, or the generator backend's name when unset
    accuracy: float | None  # None when the task cannot verify answers
    num_solved: int
    num_problems: int
    flops_spent: int  # the whole cell, generator + verifier
    flops_per_problem_mean: float
    generated_tokens: int  # over every model
    prompt_tokens: int  # over every model, cached ones included
    wall_seconds: float
    axes: str = ""  # the cell's other grid axes, "key=value,key=value"


TABLE_COLUMNS = tuple(f.name for f in fields(TableRow))


def table_row(cell: str, strategy: str, budget: float | None, model: str, summary: dict[str, Any],
              axes: str = "") -> TableRow:
    """The table row of one finished cell.

    Args:
        cell: the cell's name.
        strategy, budget, model, axes: what the cell ran (its grid coordinates).
        summary: the cell's ``summary.json`` (``ponder.engine.results.make_summary``).

    Returns:
        The row; ``flops_per_problem_mean`` is over the problems that finished.
    """
    tokens = summary.get("tokens", {}).values()
    num_problems = int(summary["num_problems"])
    flops = int(summary["total_flops"])
    return TableRow(
        cell=cell, strategy=strategy, budget=None if budget is None else float(budget), model=model,
        accuracy=summary.get("accuracy"), num_solved=int(summary.get("num_solved", 0)),
        num_problems=num_problems, flops_spent=flops,
        flops_per_problem_mean=flops / num_problems if num_problems else 0.0,
        generated_tokens=sum(int(t.get("generated", 0)) for t in tokens),
        prompt_tokens=sum(int(t.get("prompt", 0)) for t in tokens),
        wall_seconds=float(summary.get("wall_seconds", 0.0)), axes=axes)


def write_table(rows: Sequence[TableRow], out_dir: str | Path) -> list[Path]:
    """Write ``table.csv`` and ``table.parquet`` (columns ``TABLE_COLUMNS``) to ``out_dir``.

    Returns:
        The paths written.

    Raises:
        ImportError: pandas or pyarrow is missing (``pip install pandas pyarrow (a dependency of ponder)``).
    """
    frame = table_frame(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = out_dir / TABLE_CSV, out_dir / TABLE_PARQUET
    frame.to_csv(csv_path, index=False)
    try:
        frame.to_parquet(parquet_path, index=False)
    except ImportError as e:
        raise ImportError(f"writing {parquet_path} needs pyarrow: pip install pandas pyarrow (a dependency of ponder) ({e})") from e
    return [csv_path, parquet_path]


def table_frame(rows: Sequence[TableRow]):
    """The rows as a pandas DataFrame with exactly ``TABLE_COLUMNS``, sorted by strategy then budget."""
    try:
        import pandas as pd  # pandas: a heavy import, only for the table files
    except ImportError as e:
        raise ImportError(f"the sweep table needs pandas: pip install pandas pyarrow (a dependency of ponder) ({e})") from e
    frame = pd.DataFrame([asdict(r) for r in rows], columns=list(TABLE_COLUMNS))
    frame["budget"] = frame["budget"].astype("float64")  # None -> NaN, one dtype for parquet
    frame["accuracy"] = frame["accuracy"].astype("float64")
    return frame.sort_values(["model", "strategy", "budget", "axes"], na_position="last",
                             kind="stable").reset_index(drop=True)


# -- the compute-optimal frontier ---------------------------------------------------------

def pareto_front(rows: Sequence[TableRow]) -> list[TableRow]:
    """The compute-optimal frontier: rows that no row beats with at most their FLOPs.

    A row is on the front if every row with fewer or equal mean FLOPs per problem
    has lower accuracy (ties in accuracy go to the cheaper row). Read as a step
    function, the front gives, for any FLOPs level, the best accuracy any strategy
    reached with that much compute or less (the upper envelope).

    Returns:
        The front, by increasing FLOPs (and so by strictly increasing accuracy).
        Rows without an accuracy are left out.
    """
    ranked = sorted((r for r in rows if r.accuracy is not None),
                    key=lambda r: (r.flops_per_problem_mean, -r.accuracy))
    front: list[TableRow] = []
    for row in ranked:
        if not front or row.accuracy > front[-1].accuracy:
            front.append(row)
    return front


def frontier_accuracy(front: Sequence[TableRow], flops: float) -> float | None:
    """The frontier's accuracy at ``flops`` per problem: the best reached with at most that much."""
    best = None
    for row in front:
        if row.flops_per_problem_mean <= flops:
            best = row.accuracy
    return best


def best_per_budget(rows: Sequence[TableRow]) -> dict[tuple[str, float | None], TableRow]:
    """The most accurate row of each (model, budget); ties go to the row that spent less.

    Returns:
        (model, budget) -> the winning row.
    """
    best: dict[tuple[str, float | None], TableRow] = {}  # (model, budget) -> best row so far
    for row in rows:
        if row.accuracy is None:
            continue
        key = (row.model, row.budget)
        held = best.get(key)
        if held is None or (row.accuracy, -row.flops_per_problem_mean) > (
                held.accuracy, -held.flops_per_problem_mean):
            best[key] = row
    return best


# -- coverage and its power law -------------------------------------------------------------

def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The chance that k of ``num_samples`` samples, drawn without replacement, include a correct one.

    The unbiased estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021, used by
    Brown et al. 2024), as a product so that large n does not overflow.

    Raises:
        ValueError: unless ``0 <= num_correct <= num_samples`` and ``1 <= k <= num_samples``.
    """
    n, c = num_samples, num_correct
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= correct <= samples and 1 <= k <= samples, "
                         f"got samples={n}, correct={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def coverage_curve(correct_per_problem: Sequence[Sequence[bool]],
                   ks: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coverage at each k: the mean over problems of ``pass_at_k`` of their samples' correctness.

    Args:
        correct_per_problem: for each problem, whether each of its samples was correct.
        ks: sample counts to evaluate; default powers of two up to the fewest samples
            any problem has, and that number itself.

    Returns:
        (ks, coverage), two float arrays of equal length.

    Raises:
        ValueError: no problems, a problem without samples, or a k above a problem's samples.
    """
    if not correct_per_problem or any(len(s) == 0 for s in correct_per_problem):
        raise ValueError("coverage needs at least one problem and at least one sample per problem")
    n_min = min(len(s) for s in correct_per_problem)
    if ks is None:
        ks = [2**i for i in range(int(math.log2(n_min)) + 1)]
        ks += [n_min] if n_min != ks[-1] else []  # every sample counts, not only a power of two
    coverage = [np.mean([pass_at_k(len(s), sum(map(bool, s)), k) for s in correct_per_problem])
                for k in ks]
    return np.asarray(ks, dtype=float), np.asarray(coverage, dtype=float)


@dataclass(slots=True)
class PowerLawFit:
    """``coverage(k) ~= exp(a * k**b)``; ``rmse``/``max_abs_error`` are in coverage units."""

    a: float  # log coverage at k = 1
    b: float  # how fast the shortfall shrinks with k
    rmse: float
    max_abs_error: float
    num_points: int

    def predict(self, k: Any) -> np.ndarray:
        """Coverage the fit predicts at ``k`` (a number or an array)."""
        return np.exp(self.a * np.asarray(k, dtype=float) ** self.b)


def fit_power_law(k: Sequence[float], coverage: Sequence[float], max_iter: int = 200) -> PowerLawFit:
    """Fit ``coverage = exp(a * k**b)`` by least squares on coverage itself.

    Start from the straight line ``log(-log c) = log(-a) + b log k`` through the points
    strictly between 0 and 1, then refine ``(log(-a), b)`` by Levenberg-Marquardt on
    the residuals in coverage, so that points near 0 or 1 (where the log-log transform
    blows noise up) count as much as the rest. Writing a as ``-exp(alpha)`` keeps a < 0.

    Raises:
        ValueError: fewer than ``MIN_FIT_POINTS`` k values with coverage strictly inside (0, 1), k not positive, or
            lengths that differ.
    """
    k_arr, c_arr = np.asarray(k, dtype=float), np.asarray(coverage, dtype=float)
    if k_arr.shape != c_arr.shape or k_arr.ndim != 1:
        raise ValueError(f"k and coverage must be 1-d and of equal length, got {k_arr.shape} and {c_arr.shape}")
    if np.any(k_arr <= 0):
        raise ValueError(f"k must be positive, got {k_arr.tolist()}")
    inside = (c_arr > 0) & (c_arr < 1)
    if np.unique(k_arr[inside]).size < MIN_FIT_POINTS:  # two points fit any two parameters exactly
        raise ValueError(f"the power-law fit needs {MIN_FIT_POINTS} k values with coverage strictly "
                         f"between 0 and 1, got coverage {c_arr.tolist()} at k {k_arr.tolist()}")
    b, alpha = np.polyfit(np.log(k_arr[inside]), np.log(-np.log(c_arr[inside])), 1)
    alpha, b = _levenberg_marquardt(np.log(k_arr), c_arr, float(alpha), float(b), max_iter)
    a = -math.exp(alpha)
    residual = np.exp(a * k_arr**b) - c_arr
    return PowerLawFit(a=a, b=float(b), rmse=float(np.sqrt(np.mean(residual**2))),
                       max_abs_error=float(np.max(np.abs(residual))), num_points=int(k_arr.size))


def _levenberg_marquardt(log_k: np.ndarray, c: np.ndarray, alpha: float, b: float,
                         max_iter: int) -> tuple[float, float]:
    def model(al: float, bb: float) -> tuple[np.ndarray, np.ndarray]:
        g = -np.exp(al + bb * log_k)  # a * k**b
        return np.exp(g), g

    damping = 1e-3
    f, g = model(alpha, b)
    cost = float(np.sum((f - c) ** 2))
    for _ in range(max_iter):
        jac = np.stack([f * g, f * g * log_k], axis=1)  # (points, 2): d f / d(alpha, b)
        grad = jac.T @ (f - c)
        hess = jac.T @ jac
        step = np.linalg.solve(hess + damping * np.diag(np.diag(hess) + 1e-12), -grad)
        f_new, g_new = model(alpha + step[0], b + step[1])
        new_cost = float(np.sum((f_new - c) ** 2))
        if new_cost < cost:
            alpha, b, f, g = alpha + step[0], b + step[1], f_new, g_new
            converged = cost - new_cost < 1e-15 * max(cost, 1e-30) or np.max(np.abs(step)) < 1e-10
            cost, damping = new_cost, damping / 10
            if converged:
                break
        else:
            damping *= 10
            if damping > 1e10:
                break
    return alpha, b
