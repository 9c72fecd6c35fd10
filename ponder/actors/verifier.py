"""The verifier actor: one verifier (PRM) backend behind a batch ``score`` method."""

from __future__ import annotations

from ponder.actors.replica import BackendActor
from ponder.search.messages import ScoreRequest, ScoreResult


class VerifierActor(BackendActor):
    """Wraps a VerifierBackend built from a ``BackendSpec``; ``ray.remote(VerifierActor)`` hosts it."""

    role = "verifier"

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One result per request, in request order (RuntimeError if the backend lost some)."""
        return self._run(self._backend.score, requests)

    def score_packed(self, data: bytes) -> bytes:
        """``score`` on a batch in the wire format (``messages.pack``), as Ray pools call it."""
        return self._run_packed(self.score, data)
