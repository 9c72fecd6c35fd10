"""Game of 24 in the Tree of Thoughts format (Yao et al. 2023).

Use the four numbers once each with ``+ - * /`` to make 24. A path is::

    Input: 4 5 6 10            <- the prompt
    10 - 4 = 6 (left: 5 6 6)   <- three operation steps (see ponder.tasks.arithmetic)
    5 * 6 = 30 (left: 6 30)
    30 - 6 = 24 (left: 24)
    Answer: (5 * (10 - 4)) - 6 = 24

Data is ToT's ``24.csv``; a problem's id is its 0-based row (row 0 is rank 1). Rows
900-999 are the standard test split, and no puzzle with the same number multiset as a
test puzzle may ever be trained on: ``train_puzzles`` enforces that.
"""

from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path
from typing import Iterable, Sequence

from ponder.tasks import arith_check, arithmetic
from ponder.tasks.arithmetic import State, StepOption, step_options
from ponder.tasks.base import Problem, Task

TARGET = 24
TEST_SPLIT = range(900, 1000)  # ToT's test puzzles: 0-based rows of 24.csv
CSV_ENV = "PONDER_GAME24_CSV"
_PACKAGED_CSV = Path(__file__).parent / "data" / "24.csv"
_REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["TARGET", "TEST_SPLIT", "Game24Task", "State", "StepOption", "default_csv_path",
           "load_puzzles", "puzzles_in_test_split", "train_puzzles", "is_test_puzzle", "parse_numbers",
           "solutions", "step_options", "random_valid_steps", "random_trace", "verify",
           "check_step", "extract_answer", "is_terminal"]


def default_csv_path() -> Path:
    """Where 24.csv is read from when no path is given.

    Order: ``$PONDER_GAME24_CSV``; ``../shared/data/game24/24.csv`` relative to the
    working directory, then to the repository; the copy shipped inside the package.

    Raises:
        FileNotFoundError: if ``$PONDER_GAME24_CSV`` names a missing file, or no copy exists.
    """
    env = os.environ.get(CSV_ENV)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"${CSV_ENV}={env!r} is not a readable file")
        return Path(env)
    rel = Path("..") / "shared" / "data" / "game24" / "24.csv"
    candidates = [Path.cwd() / rel, _REPO_ROOT / rel, _PACKAGED_CSV]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError("24.csv not found; looked in " + ", ".join(map(str, candidates))
                            + f"; set ${CSV_ENV} to its path")


def parse_numbers(text: str | Sequence[int]) -> list[int]:
    """The puzzle numbers of ``"4 5 6 10"``, ``"Input: 4 5 6 10"`` or a list of ints."""
    if isinstance(text, str):
        return [int(t) for t in re.findall(r"\d+", text)]
    return [int(n) for n in text]


def load_puzzles(path: str | os.PathLike | None = None) -> list[Problem]:
    """All puzzles of a ToT ``24.csv``, in file order.

    Args:
        path: the csv (default: ``default_csv_path()``).
    Returns:
        ``Problem(problem_id=str(row), problem="4 5 6 10")`` per row.
    Raises:
        FileNotFoundError / ValueError: for a missing file or one without a Puzzles column.
    """
    path = Path(path) if path is not None else default_csv_path()
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise FileNotFoundError(f"cannot read game24 csv {str(path)!r}: {e}") from e
    if rows and "Puzzles" not in rows[0]:
        raise ValueError(f"{path}: expected a 'Puzzles' column, found {list(rows[0])}")
    return [Problem(str(i), row["Puzzles"].strip()) for i, row in enumerate(rows)]


def _key(numbers: str | Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(parse_numbers(numbers)))


_TEST_KEYS: dict[str, frozenset[tuple[int, ...]]] = {}  # csv path -> test multisets


def _test_keys(path: str | os.PathLike | None = None) -> frozenset[tuple[int, ...]]:
    resolved = str(Path(path) if path is not None else default_csv_path())
    if resolved not in _TEST_KEYS:
        _TEST_KEYS[resolved] = frozenset(_key(p.problem) for p in puzzles_in_test_split(resolved))
    return _TEST_KEYS[resolved]


def puzzles_in_test_split(path: str | os.PathLike | None = None) -> list[Problem]:
    """The 100 test puzzles (rows 900-999)."""
    return load_puzzles(path)[TEST_SPLIT.start:TEST_SPLIT.stop]


def is_test_puzzle(numbers: str | Sequence[int], path: str | os.PathLike | None = None) -> bool:
    """True if ``numbers`` (in any order) is the multiset of a test puzzle."""
    return _key(numbers) in _test_keys(path)


def train_puzzles(path: str | os.PathLike | None = None) -> list[Problem]:
    """Every puzzle outside the test split whose multiset is not also a test puzzle's."""
    keys = _test_keys(path)
    return [p for i, p in enumerate(load_puzzles(path))
            if i not in TEST_SPLIT and _key(p.problem) not in keys]


def solutions(numbers: str | Sequence[int]) -> list[list[str]]:
    """Every distinct canonical step sequence reaching 24, each ending in an Answer line."""
    return arithmetic.solve(parse_numbers(numbers), TARGET, use_all=True)


def initial_state(numbers: str | Sequence[int]) -> State:
    """The start state of a puzzle, for walking ``step_options`` by hand."""
    return State.initial(parse_numbers(numbers))


def random_trace(numbers: str | Sequence[int], rng: random.Random,
                 num_steps: int | None = None) -> tuple[list[str], bool]:
    """A random walk of valid steps (``Answer:`` line only if it reaches 24); see arithmetic."""
    return arithmetic.random_trace(parse_numbers(numbers), TARGET, rng, num_steps)


def random_valid_steps(numbers: str | Sequence[int], rng: random.Random,
                       num_steps: int | None = None) -> list[str]:
    """Random arithmetically valid operation steps (no Answer line), for partial traces."""
    steps, _ = random_trace(numbers, rng, num_steps)
    return [s for s in steps if not arithmetic.is_answer(s)]


def answer_line(expr: str) -> str:
    """``Answer: <expr> = 24``."""
    return arithmetic.answer_line(expr, TARGET)


def _numbers_of(problem: Problem | str | Sequence[int]) -> list[int]:
    return parse_numbers(problem.problem if isinstance(problem, Problem) else problem)


def verify(problem: Problem | str | Sequence[int], answer_expr: str | None) -> bool:
    """True if ``answer_expr`` uses each puzzle number exactly once and equals 24 exactly.

    Args:
        problem: the puzzle (a Problem, ``"4 5 6 10"`` or a list of ints).
        answer_expr: ``"(5 * (10 - 4)) - 6"`` or a whole ``Answer: ... = 24`` line.
    """
    return arith_check.verify_expression(_numbers_of(problem), answer_expr, TARGET, use_all=True)


def check_step(problem: Problem | str | Sequence[int], steps: Sequence[str]) -> bool:
    """True if the last step is right given the previous one (see arith_check.check_arith_step)."""
    return arith_check.check_arith_step(_numbers_of(problem), steps, TARGET, use_all=True)


def is_terminal(step: str) -> bool:
    """True for an ``Answer:`` line."""
    return arithmetic.is_answer(step)


def extract_answer(steps: Iterable[str]) -> str | None:
    """The expression of the last ``Answer:`` line, canonically spaced; None if none."""
    for step in reversed(list(steps)):
        if is_terminal(step):
            return arith_check.answer_expression(step)
    return None


class Game24Task(Task):
    """Game of 24 as a search task: 3 operation steps and an Answer line, exact checks."""

    name = "game24"
    step_delimiter = "\n"
    max_steps = 4

    def prompt(self, problem: Problem) -> str:
        return f"Input: {' '.join(map(str, parse_numbers(problem.problem)))}\n"

    def is_terminal(self, step: str) -> bool:
        return is_terminal(step)

    def extract_answer(self, steps: list[str]) -> str | None:
        return extract_answer(steps)

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        return verify(problem, answer)

    def check_step(self, problem: Problem, steps: list[str]) -> bool | None:
        return check_step(problem, steps)

    def parse_problem(self, record: dict, index: int) -> Problem:
        """Accept ``{"problem": "4 5 6 10"}``, ``{"numbers": [4, 5, 6, 10]}`` or ``{"Puzzles": ...}``."""
        raw = record.get("problem", record.get("numbers", record.get("Puzzles")))
        if raw is None:
            raise KeyError("a game24 record needs 'problem' (e.g. \"4 5 6 10\") or 'numbers'")
        numbers = parse_numbers(raw)
        return Problem(str(record.get("id", index)), " ".join(map(str, numbers)))

    def default_problems(self) -> Path:
        """The 24.csv ``default_csv_path()`` finds (all 1,362 puzzles; 900-999 are the test split)."""
        return default_csv_path()

    def load_default(self, path: str | os.PathLike | None = None) -> list[Problem]:
        """All puzzles of the default 24.csv (``ponder.tasks.game24.load_puzzles``)."""
        return load_puzzles(path)
