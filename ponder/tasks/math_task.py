"""MATH (Hendrycks et al.) style problems: free-form steps, a ``\\boxed{}`` final answer.

Named ``math_task`` so nothing can mistake it for the standard library's ``math``; the
registry name is ``math``. Steps are separated by a blank line, as in
search-and-learn's PRM setup, and a step holding ``\\boxed{...}`` ends the path.
"""

from __future__ import annotations

from ponder.tasks.base import Problem, Task
from ponder.tasks.latex_answer import is_equiv, last_boxed, normalize

PROMPT = ("Solve the following math problem step by step. Separate steps with a blank line "
          "and put the final answer in \\boxed{{}}.\n\nProblem: {problem}\n\n")


def extract_boxed_answer(text: str) -> str | None:
    """The normalized contents of the last ``\\boxed{}`` in ``text``; None if there is none."""
    boxed = last_boxed(text)
    return None if boxed is None else normalize(boxed)


class MathTask(Task):
    """MATH-style task: answers are compared with ``latex_answer.is_equiv``."""

    name = "math"
    step_delimiter = "\n\n"
    max_steps = 32

    def prompt(self, problem: Problem) -> str:
        return PROMPT.format(problem=problem.problem)

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
