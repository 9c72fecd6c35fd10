"""Replica pools without Ray: backend objects called directly in this process.

They mirror the part of ``ponder.actors.ReplicaPool`` the engine loop uses
(``dispatch``, ``has_capacity``, ``num_in_flight``, ``pop_failed``, ``model_spec``),
so the loop is the same code with or without Ray. Tests and the engine-overhead
benchmark use them (``ray.mode: inprocess`` or ``ponder.engine.engine.run_inprocess``).
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

from ponder.actors.factory import build_backend, spec_from_config
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, Request, Result


class InProcessPool:
    """One backend object; queued batches run one at a time, oldest first, on ``run_one``.

    A batch whose backend call raises is given up whole (there is no other replica
    to retry on): its requests come back from ``pop_failed`` and ``last_error`` says why.

    Args:
        backend: a GeneratorBackend or VerifierBackend instance.
        role: ``"generator"`` or ``"verifier"``.
    """

    def __init__(self, backend: Any, role: str):
        self.backend = backend
        self.role = role
        self.last_error: str | None = None
        self.num_batches = 0
        self._queue: deque[list[Request]] = deque()
        self._failed: list[Request] = []

    def model_spec(self) -> ModelSpec:
        return self.backend.model_spec()

    def render_prompts(self, requests: list[GenerateRequest]) -> list[str] | None:
        """The text the model reads for each request; None when the backend reads prefixes as is."""
        render = getattr(self.backend, "render_prompt", None)  # optional backend method
        return None if render is None else [render(r) for r in requests]

    def dispatch(self, batch: list[Request], tokens: int | None = None) -> None:
        if batch:
            self._queue.append(list(batch))

    def has_capacity(self) -> bool:
        return not self._queue

    @property
    def num_in_flight(self) -> int:
        return sum(map(len, self._queue))

    @property
    def num_queued(self) -> int:
        return self.num_in_flight  # nothing runs between run_one calls: every request waits

    def pop_failed(self) -> list[Request]:
        failed, self._failed = self._failed, []
        return failed

    def run_one(self) -> list[Result]:
        """Run the oldest queued batch; its results, or [] if it failed or none is queued."""
        if not self._queue:
            return []
        batch = self._queue.popleft()
        self.num_batches += 1
        method = self.backend.generate if self.role == "generator" else self.backend.score
        try:
            results = list(method(batch))
        except Exception as e:  # noqa: BLE001 -- reported per request, as a Ray pool does
            self.last_error = f"{type(e).__name__}: {e}"
            self._failed += batch
            return []
        if len(results) != len(batch):  # a backend bug would otherwise lose requests silently
            self.last_error = f"{self.role} returned {len(results)} results for {len(batch)} requests"
            self._failed += batch
            return []
        return results

    def shutdown(self) -> None:
        self._queue.clear()


@dataclass
class InProcessPools:
    """Generator and verifier InProcessPools; ``verifier`` is None if the job has none."""

    generator: InProcessPool
    verifier: InProcessPool | None = None

    def all(self) -> list[InProcessPool]:
        return [p for p in (self.generator, self.verifier) if p is not None]

    def collect(self, timeout: float) -> list[Result]:
        """Run one queued batch of each pool: both roles advance, as concurrent replicas would."""
        return [result for pool in self.all() for result in pool.run_one()]

    def shutdown(self) -> None:
        for pool in self.all():
            pool.shutdown()


def build_inprocess_pools(generator_config: Any, verifier_config: Any | None, task: Any = None) -> InProcessPools:
    """Build the backends two ``ModelConfig``s name, in this process.

    Raises:
        ValueError: unknown backend. ImportError: its module or a dependency is missing.
    """
    specs = {"generator": spec_from_config(generator_config, task)}  # a chat generator takes its turns
    if verifier_config is not None:
        specs["verifier"] = spec_from_config(verifier_config)
    pools = {role: InProcessPool(build_backend(spec, role), role) for role, spec in specs.items()}
    torch = sys.modules.get("torch")
    if torch is not None:  # the roles take turns in this process: threads as a replica would have
        # (torch's default is every core: two in-process jobs on one box then fight for them)
        torch.set_num_threads(max(spec.num_threads for spec in specs.values()))
    return InProcessPools(pools["generator"], pools.get("verifier"))
