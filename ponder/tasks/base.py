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
        """Worked examples as ``(problem, solution)`` pairs, fixed for the task's settings.

        A solution's steps are joined by ``step_delimiter``, as the model should write
        them. Examples come from train problems only, never from a test split.
        """
        return []

    def user_prompt(self, problem: Problem) -> str:
        """The user's message that poses ``problem`` to a chat model (the problem text)."""
        return problem.problem

    def chat_messages(self, problem: Problem) -> list[dict[str, str]]:
        """The conversation that poses ``problem`` to a chat model, before the answer.

        Returns:
            ``[{"role": "system" | "user" | "assistant", "content": ...}, ...]``: the
            system prompt (if any), each few-shot example as a user and an assistant
            turn, then the user's turn for ``problem``. An example whose problem text is
            ``problem``'s own is left out, so a train problem never sees its solution.
        """
        messages = []
        system = self.system_prompt()
        if system:
            messages.append({"role": "system", "content": system})
        for question, solution in self.few_shot():
            if question.strip() == problem.problem.strip():
                continue
            messages.append({"role": "user", "content": self.user_prompt(Problem("", question))})
            messages.append({"role": "assistant", "content": solution})
        messages.append({"role": "user", "content": self.user_prompt(problem)})
        return messages

    def plain_prompt(self, problem: Problem) -> str:
        """The chat parts as one text for a base model (no chat template).

        The system prompt, then ``Question: ...`` / ``Answer:`` blocks for the few-shot
        examples and for ``problem``. The text ends with ``step_delimiter``, so the
        first step follows a delimiter just as every later step does.
        """
        blocks = [system] if (system := self.system_prompt()) else []
        for message in self.chat_messages(problem):
            if message["role"] == "user":
                blocks.append(f"Question: {message['content']}\nAnswer:")
            elif message["role"] == "assistant":
                blocks[-1] += self.step_delimiter + message["content"]
        return "\n\n".join(blocks) + self.step_delimiter

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
