"""A run directory's record of its job: ``problems.jsonl``, so that resuming needs only the directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ponder.tasks.base import Problem

PROBLEMS_FILE = "problems.jsonl"  # in a run directory: the job's problems, for resuming


def write_job_problems(out_dir: str | os.PathLike, problems: Iterable[Problem]) -> Path:
    """Write the job's problems to ``out_dir/problems.jsonl``, so a resume needs only the directory."""
    path = Path(out_dir) / PROBLEMS_FILE
    tmp = path.with_name(f".{PROBLEMS_FILE}.tmp")
    with open(tmp, "w") as f:
        for p in problems:
            f.write(json.dumps({"id": p.problem_id, "problem": p.problem, "reference": p.reference}) + "\n")
    os.replace(tmp, path)
    return path


def read_job_problems(out_dir: str | os.PathLike) -> list[Problem]:
    """The problems a run directory's job was started with (``problems.jsonl``).

    Raises:
        FileNotFoundError: the directory holds no job (the message says what to pass instead).
    """
    path = Path(out_dir) / PROBLEMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} holds no job to resume; pass the "
                                f"problems (--problems / --range) as in the first run")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Problem(str(r["id"]), r["problem"], r.get("reference")) for r in rows]


def resume_inputs(run_dir: str | os.PathLike, out: str | None, config: str | None,
                  problems: object, range_: str | None) -> tuple[str, str | None, object]:
    """What ``ponder solve --resume DIR`` runs: ``(out dir, config path, problems)``.

    The run's own ``config.yaml`` unless ``--config`` is given, and its
    ``problems.jsonl`` unless ``--problems`` or ``--range`` is.

    Raises:
        ValueError: ``--out`` names another directory. FileNotFoundError: DIR holds no run.
    """
    run_dir = Path(run_dir)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise ValueError(f"--resume {run_dir} and --out {out} name different run directories")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run directory")
    if config is None and (run_dir / "config.yaml").is_file():
        config = str(run_dir / "config.yaml")
    if problems is None and range_ is None:
        problems = read_job_problems(run_dir)
    return str(run_dir), config, problems
