"""What a sweep leaves besides its cells: table, frontier, power-law fit and plots.

Written to the sweep directory from every finished cell:

    table.csv, table.parquet    one row per cell (``ponder.sweep.frontier.TABLE_COLUMNS``)
    frontier.csv                the compute-optimal frontier (same columns)
    analysis.json               frontier, best strategy per budget, power-law fits
    accuracy_vs_flops.png       accuracy vs mean FLOPs per problem, a line per strategy
    coverage.png                best-of-N coverage vs samples and its power-law fit

The power law is fitted to true coverage@k (Brown et al. 2024: the share of problems
that some of k samples solves, whatever the verifier would pick) of the best-of-N cell
with the most FLOPs. Each sample's correctness comes from the results lines'
``candidates`` lists if they carry them (``sample_correctness``), else from the
cell's ``trees.jsonl`` (``tree_sample_correctness``: a sample is a subtree under the
root, checked by the task's verdicts). Without either, the fit falls back to
best-of-N *accuracy* (the verifier's pick) per cell against samples per problem
(``num_samples`` on the lines) or, lacking that, against FLOPs relative to the
cheapest cell; ``source`` in analysis.json says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ponder.sweep.frontier import (PowerLawFit, TableRow, best_per_budget, coverage_curve,
                                     fit_power_law, pareto_front, table_frame, table_row, write_table)
from ponder.engine.progress import format_flops
from ponder.engine.rundir import RunDir
from ponder.sweep.plot import plot_accuracy_vs_flops, plot_coverage
from ponder.sweep.spec import Cell
from ponder.search.tree import NodeStatus

BEST_OF_N = "best_of_n"
ANALYSIS_FILE = "analysis.json"
FRONTIER_CSV = "frontier.csv"
ACCURACY_PLOT = "accuracy_vs_flops.png"
COVERAGE_PLOT = "coverage.png"


@dataclass
class CoverageData:
    """Best-of-N success against samples for one model, and its power-law fit (if one was possible)."""

    model: str
    source: str  # "coverage" (per-sample), "accuracy_vs_samples" or "accuracy_vs_relative_flops"
    k: list[float]
    coverage: list[float]
    fit: PowerLawFit | None = None
    error: str | None = None  # why there is no fit


@dataclass
class SweepReport:
    """The analysis of a sweep's finished cells."""

    rows: list[TableRow]
    front: list[TableRow]
    best: dict[tuple[str, float | None], TableRow]  # (model, budget) -> most accurate row
    coverage: list[CoverageData] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # files written


def sample_correctness(line: dict[str, Any]) -> list[bool] | None:
    """Each sample's correctness from a results line's ``candidates``, in sample order.

    ``candidates`` may list booleans or mappings with a ``correct`` key; an unverifiable
    sample (None) counts as not correct. None if the line has no candidates.
    """
    candidates = line.get("candidates")
    if not candidates:
        return None
    return [bool(c.get("correct") if isinstance(c, dict) else c) for c in candidates]


def tree_sample_correctness(record: dict[str, Any]) -> list[bool | None]:
    """Each sample's correctness in a ``trees.jsonl`` record, in sample order.

    A sample is the subtree under one child of the root (best-of-N draws whole
    solutions, each a chain of step nodes from the root). It is right if a terminal
    node in it has an answer the task judged right, None if none did and some
    verdict was unknown (the task cannot verify), else wrong; a sample cut off
    before its answer is wrong.
    """
    nodes, verdicts = record["nodes"], record.get("verdicts") or {}
    top: list[int] = [0] * len(nodes)  # node id -> the root child it descends from
    outcome: dict[int, bool | None] = {}  # root child -> correctness
    for node_id, (parent_id, _, _, status, answer, *_) in enumerate(nodes):
        if parent_id < 0:
            continue
        top[node_id] = node_id if parent_id == 0 else top[parent_id]  # children have larger ids
        sample = top[node_id]
        outcome.setdefault(sample, False)
        if status == NodeStatus.TERMINAL and outcome[sample] is not True:
            verdict = verdicts.get(answer) if answer is not None else record.get("no_answer_verdict")
            if verdict is True or verdict is None:
                outcome[sample] = verdict
    return [outcome[sample] for sample in sorted(outcome)]


def cell_sample_correctness(path: Path) -> list[list[bool]] | None:
    """Per problem of the cell at ``path``, whether each sample was right; None if unknown.

    From the results lines' ``candidates``, else from ``trees.jsonl``. None when
    neither records samples, a problem has none, or the task could verify no sample.
    """
    run_dir = RunDir(path)
    lines = run_dir.read_results()
    samples = [sample_correctness(line) for line in lines]
    if lines and all(samples):
        return samples
    per_problem = [tree_sample_correctness(r) for r in run_dir.read_trees()]
    if not per_problem or not all(per_problem) or all(v is None for s in per_problem for v in s):
        return None
    return [[bool(v) for v in s] for s in per_problem]


def write_report(out_dir: str | Path, finished: Sequence[tuple[Cell, Path]]) -> SweepReport | None:
    """Analyze the finished cells and write every file of the module docstring to ``out_dir``.

    Returns:
        The report, or None if no cell has finished (nothing is written then).
    """
    if not finished:
        return None
    out_dir = Path(out_dir)
    rows = [_row(cell, path) for cell, path in finished]
    front = pareto_front(rows)
    report = SweepReport(rows=rows, front=front, best=best_per_budget(rows),
                         coverage=_coverage(finished, rows))
    report.paths += write_table(rows, out_dir)
    table_frame(front).to_csv(out_dir / FRONTIER_CSV, index=False)
    (out_dir / ANALYSIS_FILE).write_text(json.dumps(_analysis(report), indent=2) + "\n")
    report.paths += [out_dir / FRONTIER_CSV, out_dir / ANALYSIS_FILE]
    report.paths.append(plot_accuracy_vs_flops(rows, front, out_dir / ACCURACY_PLOT))
    fitted = [c for c in report.coverage if c.fit is not None]
    if fitted:
        report.paths.append(plot_coverage(fitted, out_dir / COVERAGE_PLOT))
    return report


def _row(cell: Cell, path: Path) -> TableRow:
    summary = RunDir(path).read_summary()
    if summary is None:
        raise FileNotFoundError(f"{RunDir(path).summary_path}: a finished cell without its summary")
    return table_row(cell.name, cell.strategy, cell.budget, cell.model, summary, cell.other_axes())


def _coverage(finished: Sequence[tuple[Cell, Path]], rows: Sequence[TableRow]) -> list[CoverageData]:
    out = []
    for model in sorted({row.model for row in rows}):
        cells = [(cell, path, row) for (cell, path), row in zip(finished, rows)
                 if row.model == model and cell.strategy == BEST_OF_N and not cell.other_axes()]
        if cells:
            out.append(_model_coverage(model, cells))
    return out


def _model_coverage(model: str, cells: list[tuple[Cell, Path, TableRow]]) -> CoverageData:
    _, path, _ = max(cells, key=lambda c: c[2].flops_per_problem_mean)
    samples = cell_sample_correctness(path)
    if samples:
        k, coverage = coverage_curve(samples)
        data = CoverageData(model, "coverage", k.tolist(), coverage.tolist())
    else:
        points = [(_mean_num_samples(p), r.flops_per_problem_mean, r.accuracy) for _, p, r in cells
                  if r.accuracy is not None]
        if points and all(n is not None for n, _, _ in points):
            data = CoverageData(model, "accuracy_vs_samples", *_sorted_xy([(n, a) for n, _, a in points]))
        else:
            cheapest = min((f for _, f, _ in points if f > 0), default=1.0)
            data = CoverageData(model, "accuracy_vs_relative_flops",
                                *_sorted_xy([(f / cheapest, a) for _, f, a in points if f > 0]))
    try:
        data.fit = fit_power_law(data.k, data.coverage)
    except ValueError as e:
        data.error = str(e)
    return data


def _mean_num_samples(path: Path) -> float | None:
    counts = [line.get("num_samples") for line in RunDir(path).read_results()]
    if not counts or any(not isinstance(c, (int, float)) for c in counts):
        return None
    return sum(counts) / len(counts)


def _sorted_xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    points = sorted(points)
    return [float(x) for x, _ in points], [float(y) for _, y in points]


def _analysis(report: SweepReport) -> dict[str, Any]:
    return {
        "frontier": [asdict(row) for row in report.front],
        "best_per_budget": [{"model": model, "budget": budget, "strategy": row.strategy,
                             "cell": row.cell, "accuracy": row.accuracy,
                             "flops_per_problem_mean": row.flops_per_problem_mean}
                            for (model, budget), row in sorted(report.best.items(), key=_budget_order)],
        "power_law": [{"model": c.model, "source": c.source, "k": c.k, "coverage": c.coverage,
                       "fit": asdict(c.fit) if c.fit is not None else None, "error": c.error}
                      for c in report.coverage],
    }


def _budget_order(item: tuple[tuple[str, float | None], TableRow]) -> tuple[str, float]:
    (model, budget), _ = item
    return model, math.inf if budget is None else budget


def format_report(report: SweepReport | None, out_dir: str | Path) -> str:
    """The report for a terminal: the table, the frontier, the fits, where the files are."""
    if report is None:
        return "no cell has finished yet: nothing to analyze"
    lines = [f"{'strategy':<18}{'budget':>10}{'accuracy':>10}{'FLOPs/problem':>15}{'wall s':>9}  model"]
    for row in sorted(report.rows, key=lambda r: (r.model, r.strategy, r.budget or math.inf, r.axes)):
        budget = "uncapped" if row.budget is None else format_flops(row.budget)
        accuracy = "-" if row.accuracy is None else f"{100 * row.accuracy:.1f}%"
        name = row.strategy + (f" [{row.axes}]" if row.axes else "")
        lines.append(f"{name:<18}{budget:>10}{accuracy:>10}"
                     f"{format_flops(row.flops_per_problem_mean):>15}{row.wall_seconds:>9.1f}  {row.model}")
    lines.append("frontier: " + ", ".join(
        f"{r.strategy} {100 * r.accuracy:.1f}% @ {format_flops(r.flops_per_problem_mean)}" for r in report.front))
    for c in report.coverage:
        if c.fit is None:
            lines.append(f"power law ({c.model}, {c.source}): no fit: {c.error}")
        else:
            lines.append(f"power law ({c.model}, {c.source}): exp({c.fit.a:.3f} * k^{c.fit.b:.3f}), "
                         f"rmse {c.fit.rmse:.4f} over {c.fit.num_points} points")
    lines.append(f"table: {Path(out_dir) / 'table.csv'}  plot: {Path(out_dir) / ACCURACY_PLOT}")
    return "\n".join(lines)
