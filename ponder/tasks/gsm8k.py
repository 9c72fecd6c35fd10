"""GSM8K grade-school word problems: one number is the answer.

Data ships in the package: ``data/gsm8k/test.jsonl`` (1,319 problems, evaluation only)
and ``data/gsm8k/train.jsonl.gz`` (7,473), chosen by ``task.kwargs.split``. Few-shot
examples (``task.kwargs.num_few_shot``, 0 by default) are the first train problems,
with the dataset's ``<<48/2=24>>`` calculator notes removed and one step a paragraph.

Steps are separated by a blank line, as instruct models write them. The answer is the
number after ``####`` (the dataset's own convention), else inside the last
``\\boxed{}``, else after "The answer is" / "Final answer:" / "Answer:", else the last
number in the text. Numbers compare exactly as decimals, so ``1,234``, ``$1234.00`` and
``1234`` are the same answer.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ponder.tasks.base import Problem, Task, check_split
from ponder.tasks.latex_answer import last_boxed

DATA_DIR = Path(__file__).parent / "data" / "gsm8k"
SPLIT_FILES = {"test": DATA_DIR / "test.jsonl", "train": DATA_DIR / "train.jsonl.gz"}  # split -> file
MAX_FEW_SHOT = 16  # more examples than this only lengthen every prompt

_NUMBER_RE = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\$?\s*\.\d+")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's inline calculator annotations
_BOX_NOISE_RE = re.compile(r"\\text\{[^{}]*\}|\\[$%!,]|[$%]")  # units, \$, \%, thin spaces
_MARKERS = ("the answer is", "final answer:", "answer:")
SYSTEM_PROMPT = ("Solve the math word problem step by step. Write each step as a short "
                 "paragraph and leave a blank line between steps. Finish with a line "
                 "'#### <number>' that gives the final answer as a plain number.")


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


def _number_after(text: str, marker: str) -> str | None:
    at = text.lower().rfind(marker)
    if at < 0:
        return None
    match = _NUMBER_RE.search(text, at + len(marker))
    return None if match is None else normalize_number(match.group())


def extract_number(text: str) -> str | None:
    """The answer number a GSM8K-style solution states, normalized; None if it has none.

    In order: the first number after the last ``####``; the number in the last
    ``\\boxed{}`` (instruct models box answers even when asked for ``####``); the first
    number after the last "The answer is" / "Final answer:" / "Answer:"; the last
    number anywhere.
    """
    number = _number_after(text, "####")
    if number is not None:
        return number
    boxed = last_boxed(text)
    if boxed is not None:
        inside = _BOX_NOISE_RE.sub("", boxed.replace("{,}", ",")).strip()
        if _NUMBER_RE.fullmatch(inside):  # \boxed{x + 3} states no number: fall through
            return normalize_number(inside)
    for marker in _MARKERS:
        number = _number_after(text, marker)
        if number is not None:
            return number
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True if both parse as numbers with exactly the same value."""
    na, nb = normalize_number(a), normalize_number(b)
    return na is not None and na == nb


def solution_steps(answer: str) -> list[str]:
    """A GSM8K ``answer`` field as steps: one a line, calculator notes removed, ``#### N`` last."""
    lines = (_CALCULATOR_RE.sub("", line).strip() for line in answer.splitlines())
    return [line for line in lines if line]


@functools.lru_cache(maxsize=None)
def read_split(split: str) -> tuple[dict, ...]:
    """The shipped records of ``split`` (``test`` or ``train``), in file order.

    Raises:
        ValueError: ``split`` is not one of them.
    """
    path = SPLIT_FILES[check_split("gsm8k", split)]
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return tuple(json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip())


class Gsm8kTask(Task):
    """GSM8K as a search task: steps are paragraphs, a step with an answer marker ends a path.

    Args:
        split: ``test`` (evaluation only) or ``train``: the shipped file
            ``default_problems()`` names.
        num_few_shot: worked train examples put before each problem (0 to 16).

    Raises:
        ValueError: an unknown split or a ``num_few_shot`` out of range.
    """

    name = "gsm8k"
    step_delimiter = "\n\n"
    max_steps = 16

    def __init__(self, split: str = "test", num_few_shot: int = 0):
        self.split = check_split(self.name, split)
        if not (isinstance(num_few_shot, int) and 0 <= num_few_shot <= MAX_FEW_SHOT):
            raise ValueError(f"task.kwargs.num_few_shot must be an integer from 0 to "
                             f"{MAX_FEW_SHOT}, got {num_few_shot!r}")
        self.num_few_shot = num_few_shot

    def default_problems(self) -> Path:
        """The shipped file of the configured split."""
        return SPLIT_FILES[self.split]

    def system_prompt(self) -> str:
        return SYSTEM_PROMPT

    def few_shot(self) -> list[tuple[str, str]]:
        """The first ``num_few_shot`` train problems with their reference solutions."""
        if not self.num_few_shot:
            return []
        return [(r["question"].strip() + self.step_delimiter,
                 self.step_delimiter.join(solution_steps(r["answer"])))
                for r in read_split("train")[: self.num_few_shot]]

    def prompt(self, problem: Problem) -> str:
        """The problem text; a chat backend makes it the user turn, after the system prompt
        and few-shot turns (``ponder.actors.backends.chat``)."""
        return problem.problem.strip() + self.step_delimiter

    def is_terminal(self, step: str) -> bool:
        lower = step.lower()
        return "####" in step or "the answer is" in lower or last_boxed(step) is not None

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
