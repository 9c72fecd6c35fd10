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

    def count_prompt_tokens(self, requests: list[GenerateRequest]) -> list[int] | None:
        """Each request's prompt tokens for one sample, as ``generate`` will report them
        (chat template included): what to price its reservation with.

        Returns:
            One count per request, or None when the backend cannot count (the
            embedded and scripted ones): price with a token bound instead.
        """
        count = getattr(self._backend, "count_prompt_tokens", None)  # optional backend method
        return None if count is None else count(requests)

    def render_prompts(self, requests: list[GenerateRequest]) -> list[str] | None:
        """The text the model reads for each request (chat template, system prompt, few-shot,
        steps so far), for a trace; None when the backend reads the prefix as is."""
        render = getattr(self._backend, "render_prompt", None)  # optional backend method
        return None if render is None else [render(r) for r in requests]

    def generate_packed(self, data: bytes) -> bytes:
        """``generate`` on a batch in the wire format (``messages.pack``), as Ray pools call it."""
        return self._run_packed(self.generate, data)
