"""The task plugin API: how a problem is posed, split into steps, answered and checked.

A task is given in config by a registry name (``game24``) or as ``module:Class``.
It implements ``ponder.search.task.SearchTask`` (what strategies see) plus prompt
formatting, problem loading and an optional exact verifier.

Prompts come in two forms from the same parts. ``prompt(problem)`` is plain text for a
base model (and what the search tree starts from today). An instruct model gets
``chat_messages(problem)``: the ``system_prompt()``, the ``few_shot()`` examples as
user / assistant turns, then ``user_prompt(problem)``; the backend renders them with
the model's chat template and the steps continue the assistant's turn, each followed
by ``step_delimiter``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.search.task import split_steps

SPLITS = ("test", "train")  # task.kwargs.split of tasks that ship data


@dataclass(slots=True)
class Problem:
    """One problem of a job. ``reference`` is a known answer, if the data has one."""

    problem_id: str
    problem: str
    reference: str | None = None


class Task(ABC):
    """Base class for tasks. Subclasses set ``name`` and implement the abstract methods.

    ``step_delimiter`` ends every step (generation of one step stops at it); ``max_steps``
    bounds a path's depth.
    """

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

    # -- data --------------------------------------------------------------------

    def default_problems(self) -> Path | None:
        """The file of problems this task ships for its configured split; None if it ships none.

        ``ponder solve`` and ``ponder sweep`` read it when neither ``--problems`` nor
        ``task.problems`` names a file.
        """
        return None

    # -- prompts for instruct models ---------------------------------------------

    def system_prompt(self) -> str | None:
        """The system message for a chat model; None: the conversation has none."""
        return None

    def few_shot(self) -> list[tuple[str, str]]:
        """Worked examples as ``(prompt, solution)`` pairs, fixed for the task's settings.

        ``prompt`` poses the example's problem as ``prompt()`` poses a problem; the
        solution's steps are joined by ``step_delimiter``, as the model should write them.
        Examples come from train problems only, never from a test split. A chat backend
        renders them as earlier user / assistant turns, a raw one as text ahead of the
        prompt (``ponder.actors.backends.chat``).
        """
        return []

    def split_steps(self, text: str) -> list[str]:
        """A whole solution's steps, split at ``step_delimiter``; blank lines make no step.

        The same rule search applies to best-of-N samples (``ponder.search.task.split_steps``).
        """
        return split_steps(text, self.step_delimiter)


def check_split(task_name: str, split: str, shipped: tuple[str, ...] = SPLITS) -> str:
    """Validate a ``task.kwargs.split`` value.

    Raises:
        ValueError: naming ``task.kwargs.split`` and the splits ``task_name`` ships.
    """
    if split not in shipped:
        raise ValueError(f"task.kwargs.split: {task_name} ships {', '.join(shipped)}, "
                         f"got {split!r}")
    return split
