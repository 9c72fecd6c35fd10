"""What crosses an actor boundary: small slotted dataclasses of plain data.

Never put tree nodes, strategies or model objects in here: these cross to and from
Ray actors thousands of times per second, as msgpack (``pack`` / ``unpack``, the wire
format of a batch; fields must stay plain data: str, int, float, bool, None, lists).

Token accounting convention (the budget depends on it, see ``budget.py``):
``num_prompt_tokens`` counts prompt positions over *all* sequences of a request
(``n`` samples of a generate request, every path of a score request), and
``num_cached_prompt_tokens`` counts those the backend did not compute because
they were served from a prefix cache or shared between samples. The tokens a
backend actually computed are ``num_prompt_tokens - num_cached_prompt_tokens +
num_generated_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Sequence

import msgpack


@dataclass(slots=True)
class GenerateRequest:
    """Sample ``n`` continuations of ``prefix``.

    ``prefix_id`` names the tree node the prefix ends at (``"problem:node"``);
    pools use it to route siblings to the replica that already caches the prefix.
    ``prompt_end`` says where the task's prompt ends in ``prefix`` (the rest is the
    steps so far): a chat backend renders the prompt as the user turn and continues
    the steps as the assistant's. None: the whole prefix is the prompt.
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
    prompt_end: int | None = None


@dataclass(slots=True)
class GenerateResult:
    """``n`` samples for one GenerateRequest, in sample order.

    ``texts[i]`` excludes the prefix and the matched stop string. A finish reason
    is "stop" (a stop string ended the sample), "eos" (the model ended its answer:
    the path is over) or "length" (``max_new_tokens`` ran out). ``num_prompt_tokens``
    counts the prompt as the model read it (chat template, system prompt and all).
    """

    request_id: int
    texts: list[str]
    token_ids: list[list[int]]
    cumulative_logprobs: list[float]
    num_prompt_tokens: int
    num_cached_prompt_tokens: int
    num_generated_tokens: int
    finish_reasons: list[str] = field(default_factory=list)  # "stop" | "eos" | "length"


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


# -- the wire format of a batch ------------------------------------------------------------
#
# Ray pickles what an actor call carries. A batch of these small dataclasses packed with
# msgpack instead, as one tag and a list of field tuples, is cheaper to write and read on
# both sides than its pickle (no class lookup or per-object state per request), and the
# per-call CPU is what bounds how many calls a driver keeps going. Ray pools send batches
# this way (``ReplicaPool``).

_CLASSES = (GenerateRequest, GenerateResult, ScoreRequest, ScoreResult)
_TAGS = {cls: i for i, cls in enumerate(_CLASSES)}
_FIELDS = {cls: attrgetter(*(f.name for f in fields(cls))) for cls in _CLASSES}


def pack(batch: Sequence[Request | Result]) -> bytes:
    """A batch of messages, all of one class, as msgpack bytes (``unpack`` reverses it).

    Raises:
        TypeError: a batch mixing classes, or holding something that is not a message.
    """
    if not batch:
        return msgpack.packb(None)
    cls = type(batch[0])
    if cls not in _TAGS or any(type(m) is not cls for m in batch):
        raise TypeError(f"pack() takes a batch of one message class, got "
                        f"{sorted({type(m).__name__ for m in batch})}")
    return msgpack.packb((_TAGS[cls], list(map(_FIELDS[cls], batch))), default=_plain)


def _plain(value):
    """What msgpack cannot pack as is: numpy / torch scalars and arrays, ``array.array``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot send a {type(value).__name__} in a message")


def unpack(data: bytes) -> list[Request | Result]:
    """The batch ``pack`` wrote, as the same messages (lists stay lists, ``stop`` a tuple)."""
    packed = msgpack.unpackb(data)
    if packed is None:
        return []
    tag, rows = packed
    cls = _CLASSES[tag]
    batch = [cls(*row) for row in rows]
    if cls is GenerateRequest:
        for request in batch:
            request.stop = tuple(request.stop)
    return batch
