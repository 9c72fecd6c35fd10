"""The one interface every search strategy implements, and the registry that finds them.

A strategy is a state machine over one tree. The scheduler calls ``requests()`` to
collect what the strategy wants done now, dispatches it, and calls ``on_result()``
as results arrive (in any order). A strategy never calls a model and never imports
ray or torch.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterator

from ponder.search.flops import StepCosts
from ponder.search.messages import Request, Result
from ponder.search.task import SearchTask
from ponder.search.tree import Tree


@dataclass(slots=True)
class Answer:
    """What a finished strategy reports for its problem."""

    problem_id: str
    answer: str | None  # the extracted final answer; None if no path reached one
    trace: list[str]  # the chosen path's steps
    score: float | None  # aggregated verifier score or vote share of the chosen path
    stop_reason: str  # "done" | "budget" | "cancelled" | "max_depth" | "no_answer"
    num_nodes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyParams:
    """Base for each strategy's typed parameters. Subclasses add fields with defaults."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 64  # generation limit for one step

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "StrategyParams":
        """Build from a config dict; an unknown key raises ValueError naming the valid ones."""
        values = dict(values or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown search parameter(s) {unknown} for {cls.__name__}; "
                             f"valid: {sorted(names)}")
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        if not 0.0 <= self.temperature:
            raise ValueError(f"search.temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"search.top_p must be in (0, 1], got {self.top_p}")
        if self.max_step_tokens <= 0:
            raise ValueError(f"search.max_step_tokens must be > 0, got {self.max_step_tokens}")


@dataclass
class JobContext:
    """Objects shared by all strategies of one job (e.g. compute_optimal's allocator).

    ``budget`` is the job's BudgetManager; ``step_costs`` prices sampled steps as the
    job's scheduler reserves them (a search sizing itself to its cap reads it);
    ``shared`` maps a strategy-chosen key to an object those strategies share
    (``"compute_optimal" -> Allocator``).
    """

    budget: Any = None
    shared: dict[str, Any] = field(default_factory=dict)
    step_costs: StepCosts | None = None  # None: nothing paces itself


class Strategy(ABC):
    """Search over one tree.

    Args:
        tree: the problem's tree, rooted at its prompt.
        task: step structure of the task.
        params: this strategy's ``Params``.
        seed: makes sampling seeds, tie-breaks and rollouts deterministic.
        next_request_id: hands out request ids unique within the job.
        context: objects shared across the job's strategies.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, tree: Tree, task: SearchTask, params: StrategyParams, seed: int,
                 next_request_id: Callable[[], int], context: JobContext | None = None):
        self.tree = tree
        self.task = task
        self.params = params
        self.rng = random.Random(seed)
        self.next_request_id = next_request_id
        self.context = context or JobContext()
        self.stop_reason: str | None = None  # set once the strategy is finished

    @property
    def problem_id(self) -> str:
        return self.tree.problem_id

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @abstractmethod
    def requests(self) -> list[Request]:
        """Requests to dispatch now; empty while waiting for results or when done."""

    @abstractmethod
    def on_result(self, request: Request, result: Result) -> None:
        """Take the result of one of this strategy's requests (any order)."""

    @abstractmethod
    def answer(self) -> Answer:
        """The best answer so far; valid at any time, final once ``done``."""

    @classmethod
    def needs_verifier(cls, params: StrategyParams) -> bool:
        """Whether this strategy, with ``params``, asks a verifier to score paths.

        Config validation refuses ``verifier: null`` when it does, before anything is
        generated. Searches that pick what to expand by scores always do.
        """
        return True

    def stop(self, reason: str) -> None:
        """End the search early (``"budget"``, ``"cancelled"``); results still in flight are ignored."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def seed_for(self) -> int:
        """A sampling seed for the next generate request, drawn from this strategy's rng."""
        return self.rng.getrandbits(31)


STRATEGIES: dict[str, type[Strategy]] = {}  # strategy name -> class


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy findable by its ``name``."""
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class called ``name``.

    Raises:
        ValueError: if no strategy has that name; the message lists the valid ones.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}") from None


def iter_strategies() -> Iterator[str]:
    return iter(sorted(STRATEGIES))
