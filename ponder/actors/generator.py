"""The generator actor: one generator backend behind a batch ``generate`` method."""

from __future__ import annotations

from ponder.actors.replica import BackendActor
from ponder.search.messages import GenerateRequest, GenerateResult


class GeneratorActor(BackendActor):
    """Wraps a GeneratorBackend built from a ``BackendSpec``; ``ray.remote(GeneratorActor)`` hosts it."""

    role = "generator"

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One result per request, in request order.

        Raises:
            RuntimeError: if the backend returned a different number of results.
        """
        return self._run(self._backend.generate, requests)

    def generate_packed(self, data: bytes) -> bytes:
        """``generate`` on a batch in the wire format (``messages.pack``), as Ray pools call it."""
        return self._run_packed(self.generate, data)
