"""The generator actor: one generator backend behind a batch ``generate`` method."""

from __future__ import annotations

from ponder.actors.factory import BackendSpec
from ponder.actors.replica import BackendActor
from ponder.search.messages import GenerateRequest, GenerateResult, pack, unpack


class GeneratorActor(BackendActor):
    """Wraps a GeneratorBackend; create it with ``ray.remote(GeneratorActor).options(...)``.

    Args:
        spec: which backend to build (in this process) and with what arguments.
    """

    role = "generator"

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One result per request, in request order.

        Raises:
            RuntimeError: if the backend returned a different number of results.
        """
        return self._run(self._backend.generate, requests)

    def generate_packed(self, data: bytes) -> bytes:
        """``generate`` on a batch in the wire format (``messages.pack``), as Ray pools call it."""
        return pack(self.generate(unpack(data)))
