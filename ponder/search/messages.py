"""What crosses an actor boundary: small slotted dataclasses of plain data.

Never put tree nodes, strategies or model objects in here: these are pickled (or
msgpack-ed) to and from Ray actors thousands of times per second.

Token accounting convention (the budget depends on it, see ``budget.py``):
``num_prompt_tokens`` counts prompt positions over *all* sequences of a request
(``n`` samples of a generate request, every path of a score request), and
``num_cached_prompt_tokens`` counts those the backend did not compute because
they were served from a prefix cache or shared between samples. The tokens a
backend actually computed are ``num_prompt_tokens - num_cached_prompt_tokens +
num_generated_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class GenerateRequest:
    """Sample ``n`` continuations of ``prefix``.

    ``prefix_id`` names the tree node the prefix ends at (``"problem:node"``);
    pools use it to route siblings to the replica that already caches the prefix.
    """

    request_id: int
    prefix: str
    n: int = 1
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ("\n",)
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    prefix_id: str = ""


@dataclass(slots=True)
class GenerateResult:
    """``n`` samples for one GenerateRequest, in sample order.

    ``texts[i]`` excludes the prefix and the matched stop string.
    """

    request_id: int
    texts: list[str]
    token_ids: list[list[int]]
    cumulative_logprobs: list[float]
    num_prompt_tokens: int
    num_cached_prompt_tokens: int
    num_generated_tokens: int
    finish_reasons: list[str] = field(default_factory=list)  # "stop" | "length"


@dataclass(slots=True)
class ScoreRequest:
    """Score every step of each path; a path is the problem ``prompt`` followed by its steps."""

    request_id: int
    prompt: str
    paths: list[list[str]]
    prefix_id: str = ""


@dataclass(slots=True)
class ScoreResult:
    """``step_scores[i][j]`` is the verifier's score in [0, 1] for step j of path i."""

    request_id: int
    step_scores: list[list[float]]
    num_prompt_tokens: int
    num_cached_prompt_tokens: int


Request = GenerateRequest | ScoreRequest
Result = GenerateResult | ScoreResult
