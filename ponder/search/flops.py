"""The one FLOP formula, and the token/FLOP pricing of requests built on it.

Every FLOP the budget counts comes from ``flops()``. Forward FLOPs of a
decoder-only transformer (Kaplan et al. 2020, as in nanoGPT's ``estimate_mfu``):
``2 * N`` per token for the weights, plus ``2 * n_layer * d_model * context`` per
token for attention over ``context`` earlier positions.

Pricing: a request reserves the FLOPs it could cost at most before it is
dispatched (``worst_case_flops``) and settles to what it did cost
(``actual_flops``); ``ponder.search.budget`` keeps the ledger of both.

Why a reservation always covers its settlement: a backend's token counts respect
the token bound (each sequence's prompt has at most ``token_bound(text)`` tokens
and at most ``max_new_tokens`` are generated per sample), so the actual computed
tokens and the actual per-token context are each at most the reserved ones, and
``flops()`` grows with both. A backend that breaks the bound (a chat template
longer than the bound's slack, say) makes ``BudgetManager.settle`` raise
``BudgetError`` instead of silently passing a cap: give such a backend a larger
``token_bound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ponder.search.messages import GenerateRequest, GenerateResult, Request, Result


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the FLOP formula needs to know of a model.

    ``num_params`` excludes embeddings (they cost a lookup, not a matmul).
    ``prompt_once`` says how the serving backend runs a generate request's ``n``
    samples: True if it computes their shared prompt once (the embedded and hf
    backends), False if it may compute it once a sample (vLLM, which gets one
    request a sample and caches only full blocks). Reservations count the prompt
    accordingly. ``prompt_overhead_tokens`` is what the backend's input format adds to
    every prompt beyond its text (a chat template's turns and system prompt, a PRM's
    format), which reservations add to their token bound.
    """

    name: str
    num_params: int
    num_layers: int
    d_model: int
    prompt_once: bool = False
    prompt_overhead_tokens: int = 0


def flops(spec: ModelSpec, num_computed_tokens: int, context_len: int) -> int:
    """FLOPs to compute ``num_computed_tokens`` tokens, each attending to ``context_len`` positions.

    Args:
        spec: the model.
        num_computed_tokens: tokens the model ran forward (not served from a cache).
        context_len: positions each of them attends to (an upper bound when reserving).

    Returns:
        An exact integer, so ledgers add up with no rounding.
    """
    assert num_computed_tokens >= 0 and context_len >= 0
    per_token = 2 * spec.num_params + 2 * spec.num_layers * spec.d_model * context_len
    return num_computed_tokens * per_token


TokenBound = Callable[[str], int]  # text -> an upper bound on its token count
TOKEN_BOUND_SLACK = 16  # specials a tokenizer may add (BOS, EOS, chat markers)


def default_token_bound(text: str, slack: int = TOKEN_BOUND_SLACK) -> int:
    """An upper bound on the tokens of ``text`` for char-level and byte-level BPE tokenizers.

    Byte-level BPE starts from one token per UTF-8 byte and merges only shorten
    that; a char-level tokenizer has at most one token per byte too. The ``slack``
    covers special tokens.
    """
    # isascii() is O(1) (CPython keeps the flag), and ASCII text has a byte a character.
    return (len(text) if text.isascii() else len(text.encode("utf-8"))) + slack


@dataclass(frozen=True, slots=True)
class SlackTokenBound:
    """``default_token_bound`` with ``slack`` specials: a TokenBound that is plain data,
    so a checkpointed ``JobContext`` can hold the ``StepCosts`` built on it."""

    slack: int = TOKEN_BOUND_SLACK

    def __call__(self, text: str) -> int:
        return default_token_bound(text, self.slack)


def score_path_text(prompt: str, steps: list[str]) -> str:
    """The text a verifier reads for one path: the prompt and its steps, newline-joined."""
    return "\n".join([prompt, *steps])


def sample_tokens(prompt: int, max_new_tokens: int, prompt_once: bool) -> tuple[int, int, int]:
    """``(prompt tokens, tokens a sample, per-token context)`` of ``n`` samples from a prompt bound.

    The samples compute ``prompt + n * per_sample`` tokens: with ``prompt_once`` the
    ``prompt`` bound once and ``max_new_tokens`` a sample, otherwise ``prompt +
    max_new_tokens`` a sample. Each token attends to at most ``prompt + max_new_tokens``.
    """
    context = prompt + max_new_tokens
    return (prompt, max_new_tokens, context) if prompt_once else (0, context, context)


def generate_tokens(request: GenerateRequest, token_bound: TokenBound = default_token_bound,
                    prompt_once: bool = False) -> tuple[int, int, int]:
    """``sample_tokens`` of a generate request, its prompt bounded by ``token_bound(prefix)``.

    Raises:
        ValueError: if ``n < 1`` or ``max_new_tokens < 0``.
    """
    if request.n < 1 or request.max_new_tokens < 0:
        raise ValueError(f"GenerateRequest {request.request_id} needs n >= 1 and "
                         f"max_new_tokens >= 0, got n={request.n}, "
                         f"max_new_tokens={request.max_new_tokens}")
    return sample_tokens(token_bound(request.prefix), request.max_new_tokens, prompt_once)


def worst_case_tokens(request: Request, token_bound: TokenBound = default_token_bound,
                      prompt_once: bool = False) -> tuple[int, int]:
    """``(computed tokens, per-token context)`` that ``request`` can cost at most.

    A generate request computes ``n * (P + max_new_tokens)`` tokens with
    ``P = token_bound(prefix)``, none of them cached (``P + n * max_new_tokens`` if
    its backend computes the prompt once for all samples, ``prompt_once``); a score
    request computes every path's bound, each token attending to at most the
    longest path.
    """
    if isinstance(request, GenerateRequest):
        prompt, per_sample, context = generate_tokens(request, token_bound, prompt_once)
        return prompt + request.n * per_sample, context
    bounds = [token_bound(score_path_text(request.prompt, path)) for path in request.paths]
    return sum(bounds), max(bounds, default=0)


def worst_case_flops(request: Request, spec: ModelSpec,
                     token_bound: TokenBound = default_token_bound) -> int:
    """The most FLOPs ``request`` can cost on ``spec``: what to reserve before dispatch.

    Args:
        request: a GenerateRequest (for the generator) or ScoreRequest (for the verifier).
        spec: the model that will serve it (``spec.prompt_once``: how its backend runs ``n``).
        token_bound: text -> an upper bound on its token count for that model's tokenizer.

    Raises:
        ValueError: if a generate request has ``n < 1`` or ``max_new_tokens < 0``.
    """
    return flops(spec, *worst_case_tokens(request, token_bound, spec.prompt_once))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def actual_flops(request: Request, result: Result, spec: ModelSpec) -> int:
    """The FLOPs ``result`` did cost, from the token counts the backend reported.

    Generate: ``num_prompt - num_cached + num_generated`` tokens computed, each
    attending to one sample's prompt plus its generated tokens (averaged over ``n``,
    rounded up). Score: the uncached prompt tokens, each attending to one average path.

    Raises:
        ValueError: if the counts are inconsistent (negative, or more cached than prompt tokens).
    """
    num_prompt, num_cached = result.num_prompt_tokens, result.num_cached_prompt_tokens
    num_generated = result.num_generated_tokens if isinstance(result, GenerateResult) else 0
    if min(num_prompt, num_cached, num_generated) < 0 or num_cached > num_prompt:
        raise ValueError(f"result {result.request_id} has inconsistent token counts: "
                         f"prompt={num_prompt}, cached={num_cached}, generated={num_generated}")
    computed = num_prompt - num_cached + num_generated
    if isinstance(request, GenerateRequest):
        n = max(request.n, 1)
        context = _ceil_div(num_prompt, n) + _ceil_div(num_generated, n)
    else:
        context = _ceil_div(num_prompt, len(request.paths)) if request.paths else 0
    return flops(spec, computed, context)


@dataclass(frozen=True)
class StepCosts:
    """What sampled steps can cost at most, priced as the scheduler reserves them.

    The job puts one in its strategies' ``JobContext.step_costs``, so that a search
    can size itself to what its cap has left before it asks (beam search's ``pace``).
    Prompts are token bounds, ``token_bound(text)`` as for reservations; a step
    deeper adds at most ``max_new_tokens`` to one (an estimate with subword
    tokenizers, whose bound counts bytes).
    """

    generator: ModelSpec
    verifier: ModelSpec
    token_bound: TokenBound = default_token_bound

    def generate(self, prompt: int, n: int, max_new_tokens: int) -> int:
        """Worst-case FLOPs of sampling ``n`` steps from a prompt of at most ``prompt`` tokens."""
        fixed, per_sample, context = sample_tokens(prompt, max_new_tokens, self.generator.prompt_once)
        return flops(self.generator, fixed + n * per_sample, context)

    def score(self, prompt: int, n: int, max_new_tokens: int) -> int:
        """Worst-case FLOPs of scoring ``n`` paths, each that prompt plus one step, nothing cached."""
        context = prompt + max_new_tokens
        return flops(self.verifier, n * context, context)
