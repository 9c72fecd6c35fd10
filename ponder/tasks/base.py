"""The task plugin API: how a problem is posed, split into steps, answered and checked.

A task is given in config by a registry name (``game24``) or as ``module:Class``.
It implements ``ponder.search.task.SearchTask`` (what strategies see) plus prompt
formatting, problem loading and an optional exact verifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Problem:
    """One problem of a job. ``reference`` is a known answer, if the data has one."""

    problem_id: str
    problem: str
    reference: str | None = None


class Task(ABC):
    """Base class for tasks. Subclasses set ``name`` and implement the abstract methods."""

    name: str = ""
    step_delimiter: str = "\n"
    max_steps: int = 16

    @abstractmethod
    def prompt(self, problem: Problem) -> str:
        """The text a path starts with; the generator continues it with steps."""

    @abstractmethod
    def is_terminal(self, step: str) -> bool:
        """True if ``step`` ends a solution."""

    @abstractmethod
    def extract_answer(self, steps: list[str]) -> str | None:
        """The final answer a path states, normalized so equal answers compare equal."""

    def system_prompt(self) -> str | None:
        """The system turn a chat model reads before each prompt; None keeps the model's default."""
        return None

    def few_shot(self) -> list[tuple[str, str]]:
        """Worked examples a chat model reads as earlier turns: ``(prompt, answer)`` pairs,
        ``prompt`` as ``prompt()`` poses a problem and ``answer`` its steps joined by
        ``step_delimiter``. None by default."""
        return []

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        """True/False if the task can check ``answer`` exactly; None if it cannot."""
        return None

    def check_step(self, problem: Problem, steps: list[str]) -> bool | None:
        """A programmatic verifier of the last step given the ones before; None if unavailable."""
        return None

    def parse_problem(self, record: dict[str, Any], index: int) -> Problem:
        """Turn one JSONL record (``{"id": ..., "problem": ...}``) into a Problem."""
        return Problem(str(record.get("id", index)), str(record["problem"]),
                       None if record.get("answer") is None else str(record["answer"]))
