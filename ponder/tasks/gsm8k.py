"""GSM8K grade-school word problems: one number is the answer.

The answer is the number after ``####`` (the dataset's own convention), else after
"The answer is", else the last number in the text. Numbers compare exactly as decimals,
so ``1,234``, ``$1234.00`` and ``1234`` are the same answer.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ponder.tasks.base import Problem, Task

_NUMBER_RE = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\$?\s*\.\d+")
_MARKERS = ("####", "the answer is", "final answer:", "answer:")
PROMPT = ("Solve the problem step by step, one step a line. End with a line "
          "'#### <number>'.\n\nQuestion: {problem}\n")


def normalize_number(text: str | None) -> str | None:
    """Canonical decimal text of a number: ``"$1,234.50"`` -> ``"1234.5"``; None if not one."""
    if text is None:
        return None
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(text: str) -> str | None:
    """The answer number a GSM8K-style solution states, normalized; None if it has none.

    The first number after the last of ``####`` / "The answer is" / "Final answer:" /
    "Answer:" that appears, else the last number anywhere.
    """
    lower = text.lower()
    for marker in _MARKERS:
        at = lower.rfind(marker)
        if at >= 0:
            match = _NUMBER_RE.search(text, at + len(marker))
            if match is not None:
                return normalize_number(match.group())
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True if both parse as numbers with exactly the same value."""
    na, nb = normalize_number(a), normalize_number(b)
    return na is not None and na == nb


class Gsm8kTask(Task):
    """GSM8K as a search task: a line with ``####`` ends a path."""

    name = "gsm8k"
    step_delimiter = "\n"
    max_steps = 16

    def prompt(self, problem: Problem) -> str:
        return PROMPT.format(problem=problem.problem)

    def is_terminal(self, step: str) -> bool:
        lower = step.lower()
        return "####" in step or "the answer is" in lower

    def extract_answer(self, steps: list[str]) -> str | None:
        terminal = [s for s in steps if self.is_terminal(s)]
        return extract_number(terminal[-1] if terminal else self.step_delimiter.join(steps))

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        """Exact numeric equality with the reference; None if the problem has none."""
        if problem.reference is None:
            return None
        return numbers_equal(answer, problem.reference)

    def parse_problem(self, record: dict, index: int) -> Problem:
        """Accept GSM8K records (``question`` and an ``answer`` ending in ``#### N``)."""
        question = record.get("question", record.get("problem"))
        if question is None:
            raise KeyError("a gsm8k record needs 'question' (or 'problem')")
        answer = record.get("answer")
        reference = None if answer is None else extract_number(str(answer))
        return Problem(str(record.get("id", index)), str(question), reference)
