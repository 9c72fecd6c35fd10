"""The one FLOP formula. Every FLOP the budget counts comes from ``flops()``.

Forward FLOPs of a decoder-only transformer (Kaplan et al. 2020, as in nanoGPT's
``estimate_mfu``): ``2 * N`` per token for the weights, plus ``2 * n_layer *
d_model * context`` per token for attention over ``context`` earlier positions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the FLOP formula needs to know of a model.

    ``num_params`` excludes embeddings (they cost a lookup, not a matmul).
    ``prompt_once`` says how the serving backend runs a generate request's ``n``
    samples: True if it computes their shared prompt once (the embedded and hf
    backends), False if it may compute it once a sample (vLLM, which gets one
    request a sample and caches only full blocks). Reservations count the prompt
    accordingly.
    """

    name: str
    num_params: int
    num_layers: int
    d_model: int
    prompt_once: bool = False


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
