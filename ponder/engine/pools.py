"""The pools interface the engine loop drives: one Protocol, two implementations.

``ponder.cluster.pools.RayPools`` (replicas in Ray actors) and
``ponder.engine.inprocess.InProcessPools`` (backends called in this process) both
implement ``Pools``; the loop (``ponder.engine.loop``) is the same code for either.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ponder.search.flops import ModelSpec
from ponder.tasks.base import Problem, Task
from ponder.search.messages import GenerateRequest, Request, Result

NO_VERIFIER = ModelSpec(name="none", num_params=0, num_layers=0, d_model=0)  # priced when nothing scores


class RolePool(Protocol):
    """The replicas of one role (generator or verifier), as the loop sees them."""

    last_error: str | None  # why the last batch failed for good, for the job's error line

    def dispatch(self, batch: list[Request], tokens: int | None = None) -> None:
        """Queue or send one batch; ``tokens`` is its worst-case token count (for merging)."""

    def has_capacity(self) -> bool:
        """Whether another batch would run now rather than wait in a queue."""

    @property
    def num_in_flight(self) -> int:
        """Requests dispatched and not yet returned."""

    @property
    def num_queued(self) -> int:
        """Requests of ``num_in_flight`` still waiting in the pool for a replica (for metrics)."""

    def pop_failed(self) -> list[Request]:
        """Requests given up for good since the last call (every attempt failed)."""

    def model_spec(self) -> ModelSpec:
        """The served model's size, for FLOP pricing."""

    def shutdown(self) -> None:
        """Stop serving; queued work is dropped."""


class GeneratorPool(RolePool, Protocol):
    """A generator role's pool: a ``RolePool`` that can also show what its model reads."""

    def render_prompts(self, requests: list[GenerateRequest]) -> list[str] | None:
        """The text the model reads for each request (chat turns and all); None when the
        backend reads prefixes as they are."""


class Pools(Protocol):
    """A job's generator pool and optional verifier pool."""

    generator: GeneratorPool
    verifier: RolePool | None  # None: the job has no verifier (strategies that only vote)

    def all(self) -> Sequence[RolePool]:
        """The pools that exist."""

    def collect(self, timeout: float) -> list[Result]:
        """Results that came back, waiting up to ``timeout`` seconds for the first one."""

    def shutdown(self) -> None:
        """Shut every pool down (and whatever this object started to host them)."""


def model_specs(pools: Pools) -> tuple[ModelSpec, ModelSpec]:
    """``(generator, verifier)`` specs of ``pools`` for FLOP pricing; ``NO_VERIFIER`` without one."""
    verifier = pools.verifier.model_spec() if pools.verifier is not None else NO_VERIFIER
    return pools.generator.model_spec(), verifier


def rendered_root_prompts(pool: GeneratorPool, task: Task, problems: Sequence[Problem]) -> dict[str, str]:
    """What the generator reads at each problem's root (``problem_id -> text``), for the trace;
    {} when its backend reads the task's prompt as it is."""
    requests = []
    for i, problem in enumerate(problems):
        prompt = task.prompt(problem)
        requests.append(GenerateRequest(i, prompt, prompt_end=len(prompt)))
    texts = pool.render_prompts(requests) if requests else None
    return {} if texts is None else {p.problem_id: t for p, t in zip(problems, texts)}
