"""What a run reports: a ``results.jsonl`` line per problem (``ProblemRecord``), running
totals over them, and ``summary.json``'s content. ``ponder.engine.rundir`` writes and reads
the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class TokenCounts:
    """Tokens one model handled, by the convention of ``ponder.search.messages``."""

    prompt: int = 0  # prompt positions over all sequences
    cached: int = 0  # of those, served from a prefix cache
    generated: int = 0

    def merge(self, other: "TokenCounts") -> None:
        self.prompt += other.prompt
        self.cached += other.cached
        self.generated += other.generated

    def to_dict(self) -> dict[str, int]:
        return {"prompt": self.prompt, "cached": self.cached, "generated": self.generated}


@dataclass(slots=True)
class ProblemRecord:
    """One line of ``results.jsonl``."""

    id: str
    problem: str
    answer: str | None  # the extracted final answer (game24: the expression)
    trace: list[str]  # the chosen path's steps
    correct: bool | None  # task.verify; None when the task cannot check
    score: float | None  # the strategy's score of the chosen path
    flops: int  # spent on this problem, generator + verifier
    budget_flops: int | None  # the problem's cap when it finished; None = uncapped
    flops_by_model: dict[str, int]  # "generator" | "verifier" -> FLOPs
    stop_reason: str
    tokens: dict[str, TokenCounts]  # "generator" | "verifier" -> counts
    num_nodes: int
    reference: str | None = None
    error: str | None = None  # why the problem's requests failed, if they did
    search: dict[str, Any] = field(default_factory=dict)  # the strategy's own account (Answer.extra,
    # scalars only): e.g. compute_optimal's bin, phase2, num_samples, grant; beam's num_levels

    def to_dict(self) -> dict[str, Any]:
        """The line as plain data: what ``asdict`` gives, without its deep copies.

        Every field already holds plain data (``tokens`` aside), and a job finishes
        thousands of problems a second, so the copying is worth skipping.
        """
        line = {name: getattr(self, name) for name in _RECORD_FIELDS}
        line["tokens"] = {model: counts.to_dict() for model, counts in self.tokens.items()}
        return line

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> "ProblemRecord":
        """A ``results.jsonl`` line read back (``to_dict``'s inverse)."""
        values = dict(line)
        values["tokens"] = {m: TokenCounts(**c) for m, c in (line.get("tokens") or {}).items()}
        return cls(**values)


_RECORD_FIELDS = tuple(f.name for f in fields(ProblemRecord))  # in declaration order, as asdict


@dataclass
class RunTotals:
    """Running totals over finished problems, for the progress bar and the summary."""

    num_problems: int = 0
    num_verifiable: int = 0
    num_solved: int = 0
    tokens: dict[str, TokenCounts] = field(
        default_factory=lambda: {"generator": TokenCounts(), "verifier": TokenCounts()})
    stop_reasons: dict[str, int] = field(default_factory=dict)  # stop_reason -> problems

    def add(self, record: ProblemRecord) -> None:
        self.num_problems += 1
        if record.correct is not None:
            self.num_verifiable += 1
            self.num_solved += int(record.correct)
        for model, counts in record.tokens.items():
            self.tokens.setdefault(model, TokenCounts()).merge(counts)
        self.stop_reasons[record.stop_reason] = self.stop_reasons.get(record.stop_reason, 0) + 1

    @property
    def accuracy(self) -> float | None:
        return self.num_solved / self.num_verifiable if self.num_verifiable else None


def make_summary(totals: RunTotals, *, total_flops: int, flops_by_model: dict[str, int],
                 wall_seconds: float, strategy: str, strategy_params: dict[str, Any],
                 budget: dict[str, Any], task: str, num_requested: int) -> dict[str, Any]:
    """The content of ``summary.json``.

    ``num_problems`` counts problems that finished; ``num_requested`` those the job
    was given (they differ only when a run is interrupted).
    """
    return {
        "num_problems": totals.num_problems,
        "num_requested": num_requested,
        "num_verifiable": totals.num_verifiable,
        "num_solved": totals.num_solved,
        "accuracy": totals.accuracy,
        "total_flops": total_flops,
        "flops_by_model": flops_by_model,
        "wall_seconds": round(wall_seconds, 3),
        "tokens": {model: counts.to_dict() for model, counts in totals.tokens.items()},
        "stop_reasons": totals.stop_reasons,
        "task": task,
        "strategy": strategy,
        "strategy_params": strategy_params,
        "budget": budget,
    }

