"""Countdown: reach a target from a few numbers with ``+ - * /``.

Convention (the TV game's, also Stream of Search's): each number may be used **at most
once**, and the path may answer as soon as a built number equals the target. Values are
exact, so fractional intermediates are allowed, as in game24. Steps use the game24
format (see ``ponder.tasks.arithmetic``)::

    Input: 3 7 25 50
    Target: 125
    7 * 25 = 175 (left: 3 50 175)
    175 - 50 = 125 (left: 3 125)
    Answer: (7 * 25) - 50 = 125

Instances come from ``generate(num, seed)``: random inputs combined by a random
sequence of whole-number operations, so every instance is solvable by construction.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from ponder.tasks import arith_check, arithmetic
from ponder.tasks.base import Problem, Task

_TARGET_RE = re.compile(r"target\s*[:=]?\s*(-?\d+)", re.IGNORECASE)


def format_problem(numbers: Sequence[int], target: int) -> str:
    """The canonical problem text: ``"Input: 3 7 25 50\\nTarget: 125"``."""
    return f"Input: {' '.join(map(str, numbers))}\nTarget: {target}"


def parse_instance(problem: Problem | str) -> tuple[list[int], int]:
    """``(numbers, target)`` of a countdown problem text.

    Raises:
        ValueError: if the text has no ``Target: N`` or no input numbers.
    """
    text = problem.problem if isinstance(problem, Problem) else problem
    match = _TARGET_RE.search(text)
    if match is None:
        raise ValueError(f"countdown problem needs 'Target: N', got {text!r}")
    rest = text[:match.start()] + " " + text[match.end():]
    numbers = [int(t) for t in re.findall(r"\d+", rest)]
    if not numbers:
        raise ValueError(f"countdown problem has no input numbers: {text!r}")
    return numbers, int(match.group(1))


def _random_target(numbers: list[int], rng: random.Random) -> int:
    """Combine all numbers in random order with random whole-number operations."""
    values = numbers[:]
    rng.shuffle(values)
    acc = values[0]
    for v in values[1:]:
        choices = [acc + v, acc * v, abs(acc - v)]
        if v and acc % v == 0:
            choices.append(acc // v)
        if acc and v % acc == 0:
            choices.append(v // acc)
        acc = rng.choice(choices)
    return acc


def generate(num: int, seed: int, num_numbers: int = 4, max_number: int = 25,
             min_target: int = 10, max_target: int = 100) -> list[Problem]:
    """Deterministic, solvable countdown instances.

    Args:
        num: how many instances.
        seed: the random seed; the same arguments always give the same instances.
        num_numbers: inputs per instance (2 to 6).
        max_number: inputs are drawn from 1..max_number.
        min_target, max_target: the target's range; it never equals an input.
    Returns:
        Problems with ids ``countdown-<seed>-<i>``, text from ``format_problem`` and the
        target as ``reference``.
    Raises:
        ValueError: for arguments outside these ranges.
    """
    if not 2 <= num_numbers <= 6:
        raise ValueError(f"num_numbers must be in 2..6, got {num_numbers}")
    if max_number < 1 or not 0 <= min_target <= max_target:
        raise ValueError(f"need max_number >= 1 and 0 <= min_target <= max_target, got "
                         f"{max_number}, {min_target}, {max_target}")
    rng = random.Random(seed)
    problems: list[Problem] = []
    while len(problems) < num:
        numbers = sorted(rng.randint(1, max_number) for _ in range(num_numbers))
        target = _random_target(numbers, rng)
        if not min_target <= target <= max_target or target in numbers:
            continue
        problems.append(Problem(f"countdown-{seed}-{len(problems)}",
                                format_problem(numbers, target), str(target)))
    return problems


def solutions(numbers: Sequence[int], target: int, limit: int | None = None) -> list[list[str]]:
    """Distinct canonical step sequences reaching ``target`` (each number at most once)."""
    return arithmetic.solve(numbers, target, use_all=False, limit=limit)


def verify(problem: Problem | str, answer_expr: str | None) -> bool:
    """True if ``answer_expr`` equals the target exactly, using each input at most once."""
    numbers, target = parse_instance(problem)
    return arith_check.verify_expression(numbers, answer_expr, target, use_all=False)


def check_step(problem: Problem | str, steps: Sequence[str]) -> bool:
    """True if the last step is right given the previous one (see arith_check.check_arith_step)."""
    numbers, target = parse_instance(problem)
    return arith_check.check_arith_step(numbers, steps, target, use_all=False)


class CountdownTask(Task):
    """Countdown as a search task. ``num_numbers`` bounds the path: n-1 steps and an Answer."""

    name = "countdown"
    step_delimiter = "\n"

    def __init__(self, num_numbers: int = 4):
        self.max_steps = num_numbers

    def prompt(self, problem: Problem) -> str:
        numbers, target = parse_instance(problem)
        return format_problem(numbers, target) + "\n"

    def is_terminal(self, step: str) -> bool:
        return arithmetic.is_answer(step)

    def extract_answer(self, steps: list[str]) -> str | None:
        for step in reversed(steps):
            if arithmetic.is_answer(step):
                return arith_check.answer_expression(step)
        return None

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        return verify(problem, answer)

    def check_step(self, problem: Problem, steps: list[str]) -> bool | None:
        return check_step(problem, steps)

    def parse_problem(self, record: dict, index: int) -> Problem:
        """Accept ``{"numbers": [3, 7, 25, 50], "target": 125}`` or ``{"problem": text}``."""
        if "numbers" in record and "target" in record:
            numbers, target = [int(n) for n in record["numbers"]], int(record["target"])
        elif "problem" in record:
            numbers, target = parse_instance(str(record["problem"]))
        else:
            raise KeyError("a countdown record needs 'numbers' and 'target', or 'problem'")
        return Problem(str(record.get("id", index)), format_problem(numbers, target), str(target))
