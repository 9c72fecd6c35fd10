"""MATH (Hendrycks et al.) style problems: free-form steps, a ``\\boxed{}`` final answer.

Named ``math_task`` so nothing can mistake it for the standard library's ``math``; the
registry name is ``math``. Steps are separated by a blank line, as in
search-and-learn's PRM setup, and a step holding ``\\boxed{...}`` ends the path.

The package ships MATH-500 (``data/math500/test.jsonl``), PRM800K's test split and so
for evaluation only. It ships no MATH train problems, so this task has no few-shot
examples: they may come only from train problems.
"""

from __future__ import annotations

from pathlib import Path

from ponder.tasks.base import Problem, Task, check_split
from ponder.tasks.latex_answer import is_equiv, last_boxed, normalize

DATA_DIR = Path(__file__).parent / "data" / "math500"
SPLIT_FILES = {"test": DATA_DIR / "test.jsonl"}  # split -> shipped file
SYSTEM_PROMPT = ("Solve the math problem step by step. Write each step as a short paragraph "
                 "and leave a blank line between steps. End with the sentence: Therefore, the "
                 "final answer is $\\boxed{ANSWER}$, with ANSWER the final number or expression.")


def extract_boxed_answer(text: str) -> str | None:
    """The normalized contents of the last ``\\boxed{}`` in ``text``; None if there is none."""
    boxed = last_boxed(text)
    return None if boxed is None else normalize(boxed)


class MathTask(Task):
    """MATH-style task: answers are compared with ``latex_answer.is_equiv``.

    Args:
        split: ``test`` (MATH-500, the only split shipped).
        num_few_shot: must be 0 (no train problems ship to draw examples from).

    Raises:
        ValueError: another split, or few-shot examples asked for.
    """

    name = "math"
    step_delimiter = "\n\n"
    max_steps = 32

    def __init__(self, split: str = "test", num_few_shot: int = 0):
        self.split = check_split(self.name, split, tuple(SPLIT_FILES))
        if num_few_shot != 0:
            raise ValueError(f"task.kwargs.num_few_shot must be 0 for math: no MATH train "
                             f"problems ship, and test problems are never examples; "
                             f"got {num_few_shot!r}")

    def default_problems(self) -> Path:
        """MATH-500's test file."""
        return SPLIT_FILES[self.split]

    def system_prompt(self) -> str:
        return SYSTEM_PROMPT

    def prompt(self, problem: Problem) -> str:
        """The problem text; a chat backend makes it the user turn, after the system prompt
        and few-shot turns (``ponder.actors.backends.chat``)."""
        return problem.problem.strip() + self.step_delimiter

    def is_terminal(self, step: str) -> bool:
        return last_boxed(step) is not None

    def extract_answer(self, steps: list[str]) -> str | None:
        return extract_boxed_answer(self.step_delimiter.join(steps))

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        """Equivalence with the reference answer; None if the problem has no reference."""
        if problem.reference is None:
            return None
        return answer is not None and is_equiv(answer, problem.reference)

    def parse_problem(self, record: dict, index: int) -> Problem:
        """Accept MATH records: ``problem`` plus ``answer``, or a ``solution`` with a box."""
        if "problem" not in record:
            raise KeyError("a math record needs 'problem' (and 'answer' or 'solution')")
        reference = record.get("answer")
        if reference is None and record.get("solution") is not None:
            reference = last_boxed(str(record["solution"]))
        return Problem(str(record.get("id", record.get("unique_id", index))), str(record["problem"]),
                       None if reference is None else str(reference))
