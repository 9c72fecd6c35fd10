"""What a backend is: a batch ``generate`` or ``score`` over the search messages.

Actors wrap exactly one backend. Backends know nothing of Ray, trees or budgets;
they must report exact token counts (see ``ponder.search.messages``).
"""

from __future__ import annotations

from typing import Protocol

from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult


class GeneratorBackend(Protocol):
    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One result per request, in request order."""
        ...

    def model_spec(self) -> ModelSpec: ...


class VerifierBackend(Protocol):
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One result per request, in request order."""
        ...

    def model_spec(self) -> ModelSpec: ...
