"""Read a job's problems from JSONL or from ToT's 24.csv, optionally a slice of them.

JSONL (or gzipped JSONL, ``.jsonl.gz``): one object a line, ``{"id": ..., "problem": ...}`` (a task may accept other keys,
e.g. gsm8k's ``question``); blank lines are skipped. A CSV whose header starts with
``Rank,Puzzles`` is ToT's game24 file; a problem's index there is its 0-based row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

from ponder.tasks.base import Problem, Task
from ponder.tasks.registry import get_task


def parse_range(text: str | tuple[int | None, int | None] | slice | None) -> slice | None:
    """``"900:1000"`` -> ``slice(900, 1000)``; ``"5:"``, ``":10"`` and ``"7"`` (one problem) too.

    Raises:
        ValueError: if ``text`` is not ``A:B`` with non-negative integers and A <= B.
    """
    if text is None or isinstance(text, slice):
        return text
    if isinstance(text, tuple):
        start, stop = text
    else:
        parts = text.strip().split(":")
        try:
            if len(parts) == 1:
                start = int(parts[0])
                stop = start + 1
            elif len(parts) == 2:
                start = int(parts[0]) if parts[0].strip() else None
                stop = int(parts[1]) if parts[1].strip() else None
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad problem range {text!r}; expected A:B, e.g. 900:1000") from None
    if (start is not None and start < 0) or (stop is not None and stop < 0) or \
            (start is not None and stop is not None and start > stop):
        raise ValueError(f"bad problem range {text!r}; need 0 <= A <= B")
    return slice(start, stop)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"problem file {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"problem file {str(path)!r} is a directory")
    try:
        if path.suffix == ".gz":  # GSM8K's train file ships compressed
            return gzip.decompress(path.read_bytes()).decode("utf-8")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise OSError(f"cannot read problem file {str(path)!r}: {e}") from e


def _is_game24_csv(text: str) -> bool:
    header = text.lstrip("\ufeff").split("\n", 1)[0].replace(" ", "").lower()
    return header.startswith("rank,puzzles")


def _parser(task: Any) -> Callable[[dict, int], Problem]:
    parse = getattr(task, "parse_problem", None)
    return parse if callable(parse) else lambda record, i: Task.parse_problem(task, record, i)


def _from_csv(text: str, path: Path, parse: Callable[[dict, int], Problem]) -> list[Problem]:
    problems = []
    for index, row in enumerate(csv.DictReader(io.StringIO(text.lstrip("\ufeff")))):
        line = index + 2  # header is line 1
        puzzle = row.get("Puzzles")
        if not puzzle or not puzzle.strip():
            raise ValueError(f"{path}:{line}: row has no 'Puzzles' value")
        try:
            problems.append(parse({"id": str(index), "problem": puzzle.strip()}, index))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}:{line}: bad puzzle {puzzle!r}: {e}") from e
    return problems


def _from_jsonl(text: str, path: Path, parse: Callable[[dict, int], Problem]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}  # problem_id -> line it first appeared on
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        try:
            problem = parse(record, len(problems))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}:{line_no}: bad record: {e}") from None
        if problem.problem_id in seen:
            raise ValueError(f"{path}:{line_no}: duplicate id {problem.problem_id!r} "
                             f"(first on line {seen[problem.problem_id]})")
        seen[problem.problem_id] = line_no
        problems.append(problem)
    return problems


def load_problems(path: str | os.PathLike, task: str | Task,
                  range_: str | tuple | slice | None = None) -> list[Problem]:
    """Load a job's problems.

    Args:
        path: a ``.jsonl`` (or ``.jsonl.gz``) file, or ToT's ``24.csv`` (recognized by
            its header).
        task: the task (or its registry name / plugin path) that parses each record.
        range_: ``"A:B"`` (half-open, by 0-based problem index), a slice, or None for all.
    Returns:
        The problems, in file order.
    Raises:
        FileNotFoundError / IsADirectoryError / OSError: naming ``path`` if it cannot be read.
        ValueError: naming the file and line of a malformed record, or a range that
            selects nothing.
    """
    path = Path(path)
    parse = _parser(get_task(task) if isinstance(task, str) else task)
    text = _read_text(path)
    problems = _from_csv(text, path, parse) if _is_game24_csv(text) else _from_jsonl(text, path, parse)
    window = parse_range(range_)
    if window is None:
        return problems
    selected = problems[window]
    if not selected:
        raise ValueError(f"problem range {range_!r} selects nothing from {path} "
                         f"({len(problems)} problems, indices 0..{len(problems) - 1})")
    return selected


def job_problems(task_config: Any, task: Task, path: str | os.PathLike | None = None,
                 range_: str | None = None) -> list[Problem]:
    """A job's problems: ``path``, else the config's ``task.problems``, else the task's own data.

    Args:
        task_config: the config's ``task`` section.
        task: the task object built from it.
        path: a problems file named by the user (``--problems``, a sweep's ``problems``).
        range_: ``"A:B"``, problems A..B-1 of the file.

    Raises:
        ValueError: the task ships no data and no file is named; a malformed line; a range
            that selects nothing. OSError: the file cannot be read.
    """
    path = path or task_config.problems or task.default_problems()
    if path is None:
        raise ValueError(f"task {task_config.name!r} has no bundled problems; "
                         f"name a problems file (--problems PATH)")
    return load_problems(path, task, range_)
