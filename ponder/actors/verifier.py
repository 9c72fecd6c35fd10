"""The verifier actor: one verifier (PRM) backend behind a batch ``score`` method."""

from __future__ import annotations

from ponder.actors.factory import BackendSpec
from ponder.actors.replica import BackendActor
from ponder.search.messages import ScoreRequest, ScoreResult, pack, unpack


class VerifierActor(BackendActor):
    """Wraps a VerifierBackend; create it with ``ray.remote(VerifierActor).options(...)``.

    Args:
        spec: which backend to build (in this process) and with what arguments.
    """

    role = "verifier"

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One result per request, in request order.

        Raises:
            RuntimeError: if the backend returned a different number of results.
        """
        return self._run(self._backend.score, requests)

    def score_packed(self, data: bytes) -> bytes:
        """``score`` on a batch in the wire format (``messages.pack``), as Ray pools call it."""
        return pack(self.score(unpack(data)))
