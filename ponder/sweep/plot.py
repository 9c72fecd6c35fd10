"""Sweep plots as PNG files, with matplotlib's Agg backend (no display needed, safe on a cluster).

- ``plot_accuracy_vs_flops``: accuracy against mean FLOPs per problem (log x), one
  line per strategy (and model, and other grid axes), the compute-optimal frontier
  drawn over them as a step line.
- ``plot_coverage``: best-of-N coverage against samples (log x) with each model's
  fitted ``exp(a * k**b)`` curve.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ponder.sweep.frontier import TableRow


def _pyplot():
    import matplotlib  # matplotlib: a heavy import, only when a plot is drawn

    matplotlib.use("Agg")  # before pyplot is imported anywhere: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_flops(rows: Sequence[TableRow], front: Sequence[TableRow], path: str | Path,
                           title: str = "Accuracy vs inference FLOPs per problem") -> Path:
    """Draw accuracy vs FLOPs, a line per strategy, and the frontier; save a PNG at ``path``.

    Args:
        rows: the sweep table's rows; rows without an accuracy are left out.
        front: the compute-optimal frontier (``ponder.sweep.frontier.pareto_front``).
        path: the PNG to write.
        title: the figure title.

    Returns:
        ``path`` as a Path.
    """
    plt = _pyplot()
    lines: dict[str, list[TableRow]] = {}  # legend label -> its rows
    multi_model = len({r.model for r in rows}) > 1
    for row in rows:
        if row.accuracy is None or row.flops_per_problem_mean <= 0:
            continue
        label = row.strategy + (f" ({row.model})" if multi_model else "") + (f" [{row.axes}]" if row.axes else "")
        lines.setdefault(label, []).append(row)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, group in sorted(lines.items()):
        group.sort(key=lambda r: r.flops_per_problem_mean)
        ax.plot([r.flops_per_problem_mean for r in group], [100 * r.accuracy for r in group],
                marker="o", label=label)
    front = [r for r in front if r.flops_per_problem_mean > 0]
    if front:
        x = [r.flops_per_problem_mean for r in front]
        y = [100 * r.accuracy for r in front]
        # The frontier is a step function: the best accuracy reached with at most x FLOPs.
        ax.step(x + [max(r.flops_per_problem_mean for r in rows)], y + [y[-1]], where="post",
                color="black", linestyle="--", linewidth=1.2, label="frontier (best with at most x FLOPs)")
    _log_x(ax)
    ax.set_xlabel("inference FLOPs per problem (mean)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_coverage(coverage: Sequence, path: str | Path) -> Path:
    """Draw each model's coverage points and fitted power law; save a PNG at ``path``.

    Args:
        coverage: ``ponder.sweep.report.CoverageData`` items with a ``fit``.
        path: the PNG to write.

    Returns:
        ``path`` as a Path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for data in coverage:
        k = np.asarray(data.k, dtype=float)
        points = ax.plot(k, 100 * np.asarray(data.coverage), "o", label=f"{data.model} ({data.source})")
        grid = np.geomspace(k.min(), k.max(), 200)
        ax.plot(grid, 100 * data.fit.predict(grid), "-", color=points[0].get_color(),
                label=f"exp({data.fit.a:.2f} k^{data.fit.b:.2f})")
    _log_x(ax)
    ax.set_xlabel("samples k" if all(d.source != "accuracy_vs_relative_flops" for d in coverage)
                  else "samples k (or FLOPs relative to the cheapest cell)")
    ax.set_ylabel("coverage (%)")
    ax.set_title("Best-of-N coverage and its power law (Brown et al. 2024)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _log_x(ax) -> None:
    """Log x; label minor ticks too on a short range (within a decade a log axis has no label)."""
    from matplotlib.ticker import FuncFormatter  # matplotlib: lazy, as in _pyplot

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    # Which mantissas get a minor label: all within about a decade, 2 and 5 up to two, none past
    # that (they would overlap), where the powers of ten are labelled enough.
    shown = range(2, 10) if decades <= 1.2 else (2, 5) if decades <= 2.5 else ()

    def label(value: float, _) -> str:  # 2e9 rather than 2x10^9: short, and as the table writes it
        exponent = math.floor(math.log10(value) + 1e-9)
        mantissa = round(value / 10**exponent)
        return f"{mantissa}e{exponent}" if mantissa == 1 or mantissa in shown else ""

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(FuncFormatter(label))


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
