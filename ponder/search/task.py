"""What search needs to know about a task, and nothing more.

``ponder.tasks`` implements this protocol for game24, countdown, math, gsm8k and
plugins; strategies see only this, so ``ponder.search`` stays free of task code.
"""

from __future__ import annotations

from typing import Protocol


class SearchTask(Protocol):
    """Step structure of a task's solutions.

    ``step_delimiter`` ends every step; generating one step means stopping at it.
    ``max_steps`` bounds the depth of any path.
    """

    step_delimiter: str
    max_steps: int

    def is_terminal(self, step: str) -> bool:
        """True if ``step`` ends a solution (e.g. an ``Answer:`` line)."""
        ...

    def extract_answer(self, steps: list[str]) -> str | None:
        """The final answer a path states, normalized for voting; None if it has none."""
        ...


def split_steps(text: str, delimiter: str) -> list[str]:
    """The steps of a whole solution ``text``, split at ``delimiter``.

    Blank lines never become steps: newlines left around a piece (a model that wrote
    three newlines where the delimiter is two) are trimmed, and pieces holding only
    whitespace are dropped. ``"a\\n\\n\\n\\nb\\n\\n"`` with ``"\\n\\n"`` gives ``["a", "b"]``.
    """
    pieces = (piece.strip("\r\n") for piece in text.split(delimiter))
    return [piece for piece in pieces if piece.strip()]
