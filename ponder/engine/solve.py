"""``ponder.solve``: one search job from Python, as ``ponder solve`` runs it.

    summary = ponder.solve("configs/game24.yaml", range_="900:910", out_dir="runs/demo")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from ponder.actors.requirements import check_requirements
from ponder.config import Config, load_config
from ponder.engine.engine import run_job
from ponder.tasks import job_problems, task_from_config


def solve(config: Any = None, problems: Any = None, out_dir: str | Path | None = None,
          range_: str | None = None, overrides: Sequence[str] = (), progress: bool = True,
          resume: bool = False) -> dict:
    """``ponder solve`` from Python: run a job and return its summary.

    Args:
        config: a Config, a YAML path, or None for the defaults.
        problems: a JSONL / 24.csv path, a list of ``ponder.tasks.Problem``, or None for
            the config's ``task.problems`` or the task's bundled data.
        out_dir: the run directory (default: ``output.dir``, else runs/<timestamp>).
        range_: ``"A:B"``, problems A..B-1 of the file.
        overrides: ``key=value`` strings applied to a config loaded from a path.
        progress: False shows no progress.
        resume: go on from ``out_dir``'s checkpoint and results.

    Returns:
        The summary (also written to ``out_dir/summary.json``).

    Raises:
        ConfigError, ValueError, OSError: bad config or problems (one-line messages).
        ImportError: a configured backend's packages are missing (before any work starts).
    """
    if not isinstance(config, Config):
        config = load_config(config, list(overrides))
    check_requirements(config)
    task = task_from_config(config.task)
    if problems is None or isinstance(problems, (str, Path)):
        problems = job_problems(config.task, task, problems, range_)
    out_dir = Path(out_dir or config.output.dir or default_out_dir())
    return run_job(config, list(problems), out_dir, progress=progress, task=task, resume=resume)


def default_out_dir() -> str:
    return str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
