"""``ponder sweep``: run every cell of a sweep grid, skip the ones already done, then analyze.

Each cell is one search job (``ponder.engine.engine``) in ``DIR/cells/<cell>/``:
``results.jsonl``, ``summary.json``, ``config.yaml`` as ``ponder solve`` writes them,
plus ``cell.json`` (the cell's grid point and fingerprint). A cell is done when its
summary covers every problem and its fingerprint (config, problem ids and local
model weights, ``ponder.sweep.fingerprint``) is the one asked for now, so
running the same command again resumes a stopped sweep, and a cell whose config or
weights changed runs again. Cells that share their models run on one
Engine: Ray and the actors start once, not once per cell.

After the cells, ``ponder.sweep.report`` writes the table, the frontier, the
power-law fit and the plots from every finished cell. The sweep file format is in
``ponder.sweep.spec``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ponder.engine.engine import Engine
from ponder.engine.progress import format_flops
from ponder.engine.rundir import RunDir
from ponder.sweep.fingerprint import fingerprint
from ponder.sweep.report import format_report, write_report
from ponder.sweep.spec import Cell, SweepSpec, expand_grid, load_sweep
from ponder.actors.requirements import check_requirements
from ponder.config import Config
from ponder.tasks import job_problems, task_from_config
from ponder.tasks.base import Problem, Task

CELLS_DIR = "cells"
CELL_FILE = "cell.json"

# (config, problems, out_dir, progress) -> summary dict, as ``ponder.engine.engine.run_job``
RunCell = Callable[[Config, Sequence[Problem], Path, bool], dict[str, Any]]


@dataclass
class SweepOutcome:
    """What ``run_sweep`` did: each cell's status and the files the analysis wrote."""

    statuses: dict[str, str] = field(default_factory=dict)  # cell name -> "ran" | "skipped" | "failed"
    errors: dict[str, str] = field(default_factory=dict)  # cell name -> why it failed
    report: Any = None  # ponder.sweep.report.SweepReport, None if nothing finished

    def count(self, status: str) -> int:
        return sum(s == status for s in self.statuses.values())


def cell_dir(out_dir: str | Path, cell: Cell) -> Path:
    """Where ``cell`` writes its results."""
    return Path(out_dir) / CELLS_DIR / cell.name


def cell_is_done(path: Path, expected_fingerprint: str, num_problems: int) -> bool:
    """Whether the cell directory ``path`` holds a finished run of this fingerprint over all problems."""
    run_dir = RunDir(path)
    try:
        meta = json.loads((path / CELL_FILE).read_text())
        summary = run_dir.read_summary() or {}
        num_lines = len(run_dir.read_results())
    except (OSError, ValueError):
        return False
    return (meta.get("fingerprint") == expected_fingerprint
            and summary.get("num_problems") == summary.get("num_requested") == num_problems
            and num_lines == num_problems)


class EngineCellRunner:
    """Runs cells on one Engine while their models stay the same, so Ray and actors start once.

    Args:
        task: the task object every cell shares.
    """

    def __init__(self, task: Task | None = None):
        self.task = task
        self._engine: Any = None
        self._key: str | None = None

    def __call__(self, config: Config, problems: Sequence[Problem], out_dir: Path,
                 progress: bool) -> dict[str, Any]:
        key = json.dumps({name: config.to_dict()[name]
                          for name in ("generator", "verifier", "engine", "ray", "task")}, sort_keys=True)
        if self._engine is None or key != self._key:
            self.close()
            self._engine, self._key = Engine(config, self.task), key
        # The pools depend only on the key's sections; strategy and budget are read per job.
        self._engine.config = config
        return self._engine.run(problems, out_dir, progress)

    def close(self) -> None:
        """Shut the current engine's pools (and the Ray it started) down."""
        if self._engine is not None:
            self._engine.close()
        self._engine, self._key = None, None


def load_sweep_problems(spec: SweepSpec, config: Config, task: Task) -> list[Problem]:
    """The sweep's problems: ``spec.problems``, else ``task.problems``, else the task's own data.

    Raises:
        ValueError: the task ships no data and no file is named, or a bad range.
        OSError: the file cannot be read.
    """
    return job_problems(config.task, task, spec.problems, spec.range)


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, problems: Sequence[Problem] | None = None,
              task: Task | None = None, run_cell: RunCell | None = None, progress: bool = True,
              keep_going: bool = False, log: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every unfinished cell of ``spec`` into ``out_dir``, then write the analysis.

    Args:
        spec: the parsed sweep (``load_sweep``).
        out_dir: the sweep directory; cells go to ``out_dir/cells/<cell>``.
        problems: the problems (default: ``load_sweep_problems``).
        task: the task object (default: built from the base config).
        run_cell: runs one cell (default: an ``EngineCellRunner``); tests pass a fake.
        progress: show each cell's engine progress.
        keep_going: on a cell's failure, note it and go on instead of raising.
        log: takes one line per cell event (default: print to stderr).

    Returns:
        The SweepOutcome.

    Raises:
        Whatever a cell raised, unless ``keep_going``; KeyboardInterrupt always.
    """
    log = log or _print_err
    cells = expand_grid(spec)
    for cell in cells:  # a missing package fails now, not after the cells before it ran
        check_requirements(cell.config)
    task = task if task is not None else task_from_config(cells[0].config.task)
    if problems is None:
        problems = load_sweep_problems(spec, cells[0].config, task)
    runner = run_cell or EngineCellRunner(task)
    outcome = SweepOutcome()
    try:
        for index, cell in enumerate(cells, start=1):
            status, error = _run_cell(cell, f"[sweep {index}/{len(cells)}] {cell.name}", out_dir,
                                      problems, runner, progress, keep_going, log)
            outcome.statuses[cell.name] = status
            if error:
                outcome.errors[cell.name] = error
    finally:
        close = getattr(runner, "close", None)
        if run_cell is None and close is not None:
            close()
    outcome.report = write_report(out_dir, finished_cells(out_dir, cells, problems))
    return outcome


def _run_cell(cell: Cell, label: str, out_dir: str | Path, problems: Sequence[Problem],
              runner: RunCell, progress: bool, keep_going: bool,
              log: Callable[[str], None]) -> tuple[str, str | None]:
    path = cell_dir(out_dir, cell)
    expected = fingerprint(cell.config, [p.problem_id for p in problems])
    if cell_is_done(path, expected, len(problems)):
        log(f"{label}: done already, skipped")
        return "skipped", None
    path.mkdir(parents=True, exist_ok=True)
    (path / CELL_FILE).write_text(json.dumps({"name": cell.name, "axes": cell.axes,
                                              "fingerprint": expected}, indent=2) + "\n")
    log(f"{label}: running {len(problems)} problems")
    start = time.monotonic()
    try:
        summary = runner(cell.config, problems, path, progress)
    except Exception as e:  # noqa: BLE001 -- with keep_going, one bad cell must not end the sweep
        if not keep_going:
            raise
        log(f"{label}: failed: {type(e).__name__}: {e}")
        return "failed", f"{type(e).__name__}: {e}"
    log(f"{label}: {_describe(summary)}, {time.monotonic() - start:.1f}s")
    return "ran", None


def finished_cells(out_dir: str | Path, cells: Sequence[Cell],
                   problems: Sequence[Problem]) -> list[tuple[Cell, Path]]:
    """The cells whose directories hold a finished run of what they ask for now."""
    ids = [p.problem_id for p in problems]
    return [(cell, cell_dir(out_dir, cell)) for cell in cells
            if cell_is_done(cell_dir(out_dir, cell), fingerprint(cell.config, ids), len(ids))]


def _describe(summary: dict[str, Any]) -> str:
    num = summary.get("num_problems", 0)
    per_problem = summary.get("total_flops", 0) / num if num else 0
    accuracy = summary.get("accuracy")
    solved = (f"accuracy {100 * accuracy:.1f}% ({summary.get('num_solved')}/{summary.get('num_verifiable')})"
              if accuracy is not None else f"{num} problems (not verifiable)")
    failed = f", {summary['num_failed']} failed" if summary.get("num_failed") else ""
    return f"{solved}, {format_flops(per_problem)} FLOPs/problem{failed}"


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ponder sweep``'s options to its subparser (``--debug`` is the CLI's own)."""
    parser.add_argument("--config", "-c", metavar="YAML", required=True,
                        help="sweep file: base config + grid (e.g. configs/sweep_game24.yaml)")
    parser.add_argument("--out", "-o", metavar="DIR", default=None,
                        help="sweep directory; run again with the same DIR to resume "
                             "(default: the sweep file's out, else runs/sweep-<file name>)")
    parser.add_argument("--problems", "-p", metavar="PATH", default=None,
                        help="JSONL or 24.csv of problems (default: the sweep file's problems)")
    parser.add_argument("--range", metavar="A:B", default=None, dest="range_",
                        help="only problems A..B-1 of the file (default: the sweep file's range)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override the base config (e.g. --set generator.num_replicas=2) or the "
                             "sweep (--set 'grid.budget.flops_per_problem=[1e10,1e11]', "
                             "--set strategy_params.best_of_n.n=64); repeatable")
    parser.add_argument("--keep-going", action="store_true", help="go on with the next cell when one fails")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    parser.add_argument("--analyze-only", action="store_true",
                        help="run no cell; rewrite table, frontier, fit and plots from finished cells")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bar or lines")


def run(args: argparse.Namespace) -> int:
    """``ponder sweep``: run (or list, or only analyze) the sweep; returns the exit status.

    Raises:
        ConfigError / SweepError: a bad sweep file or override. OSError, ValueError:
            unreadable problems. Whatever a cell raised, unless ``--keep-going``.
    """
    spec = load_sweep(args.config, args.overrides)
    spec.problems = args.problems or spec.problems
    spec.range = args.range_ or spec.range
    out_dir = Path(args.out or spec.out or Path("runs") / f"sweep-{Path(args.config).stem}")
    cells = expand_grid(spec)
    task = task_from_config(cells[0].config.task)
    problems = load_sweep_problems(spec, cells[0].config, task)
    if args.dry_run or args.analyze_only:
        done = {cell.name for cell, _ in finished_cells(out_dir, cells, problems)}
        if args.dry_run:
            for cell in cells:
                print(f"{'done ' if cell.name in done else 'to do'}  {cell_dir(out_dir, cell)}")
            print(f"{len(cells)} cells, {len(done)} done, {len(problems)} problems each")
            return 0
        report = write_report(out_dir, finished_cells(out_dir, cells, problems))
        print(format_report(report, out_dir))
        return 0
    outcome = run_sweep(spec, out_dir, problems=problems, task=task,
                        progress=not args.no_progress, keep_going=args.keep_going)
    print(f"{outcome.count('ran')} cells ran, {outcome.count('skipped')} skipped (done), "
          f"{outcome.count('failed')} failed")
    print(format_report(outcome.report, out_dir))
    return 1 if outcome.errors else 0
