"""What a backend is: a batch ``generate`` or ``score`` over the search messages.

Actors wrap exactly one backend. Backends know nothing of Ray, trees or budgets;
they must report exact token counts (see ``ponder.search.messages``).
"""

from __future__ import annotations

from typing import Protocol

from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult


class GeneratorBackend(Protocol):
    """A generator; one with a real tokenizer (hf, vllm) also has the optional methods
    ``count_prompt_tokens(requests) -> list[int]`` (prompt tokens a sample, as
    ``generate`` reports them) and ``render_prompt(request) -> str`` (the text the model
    reads, chat template included), which ``GeneratorActor`` exposes."""

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One result per request, in request order."""
        ...

    def model_spec(self) -> ModelSpec: ...


class VerifierBackend(Protocol):
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One result per request, in request order."""
        ...

    def model_spec(self) -> ModelSpec: ...
