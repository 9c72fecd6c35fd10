"""How a process reward model (PRM) reads a path: the step-tag convention, shared by hf and vllm.

A PRM scores step j of a path by looking at one position: the step tag written
right after step j. Two conventions cover the public PRMs:

- ``label_tokens`` (Math-Shepherd): a causal LM; the tag is `` ки`` and the score is
  the softmax over the logits of the label tokens ``("+", "-")`` at the tag
  position, read as P(good) = P("+").
- ``reward_head`` (Qwen2.5-Math-PRM): a token-classification head; the tag is the
  special token ``<extra_0>`` and the score is the class-1 probability of the
  head's softmax at the tag position. The path is wrapped in the model's chat
  template (system, user = problem, assistant = tagged steps).

Scores are taken at the *last token* of each tag, found by character offsets,
so a tag that the tokenizer splits into several tokens still works for hf.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("label_tokens", "reward_head")


@dataclass(frozen=True, slots=True)
class PRMConvention:
    """How to lay a path out for a PRM and where to read its step scores.

    Attributes:
        mode: "label_tokens" (causal LM, softmax over label-token logits) or
            "reward_head" (classification head, softmax over classes).
        step_tag: text written after every step; the score is read at its last token.
        label_tokens: (good, bad) tokens for "label_tokens" mode.
        good_class: class index read as P(good) in "reward_head" mode.
        prompt_join: text between the problem prompt and the first step.
        step_join: text between one step's tag and the next step.
        system_prompt: when set, the path is rendered with the tokenizer's chat
            template (system, user = prompt, assistant = tagged steps).
    """

    mode: str = "label_tokens"
    step_tag: str = " ки"
    label_tokens: tuple[str, str] = ("+", "-")
    good_class: int = 1
    prompt_join: str = " "
    step_join: str = "\n"
    system_prompt: str | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"PRM mode must be one of {MODES}, got {self.mode!r}")
        if not self.step_tag:
            raise ValueError("PRM step_tag must be a non-empty string")
        if self.mode == "label_tokens" and len(self.label_tokens) != 2:
            raise ValueError(f"label_tokens must be (good, bad), got {self.label_tokens!r}")


# preset name -> convention, for config files: `convention: qwen2.5-math-prm`
PRESETS: dict[str, PRMConvention] = {
    "math-shepherd": PRMConvention(),
    "qwen2.5-math-prm": PRMConvention(
        mode="reward_head",
        step_tag="<extra_0>",
        good_class=1,
        prompt_join="",
        step_join="",
        system_prompt="Please reason step by step, and put your final answer within \\boxed{}.",
    ),
}


def resolve_convention(convention: PRMConvention | str | dict | None) -> PRMConvention:
    """A PRMConvention from a preset name, a dict of fields, or an instance (None: Math-Shepherd).

    Raises:
        ValueError: an unknown preset name (the message lists the known ones).
    """
    if convention is None:
        return PRESETS["math-shepherd"]
    if isinstance(convention, PRMConvention):
        return convention
    if isinstance(convention, str):
        if convention not in PRESETS:
            raise ValueError(f"unknown PRM convention {convention!r}; known presets: {sorted(PRESETS)}")
        return PRESETS[convention]
    fields = dict(convention)
    if isinstance(fields.get("label_tokens"), list):
        fields["label_tokens"] = tuple(fields["label_tokens"])
    return PRMConvention(**fields)


def render_path(convention: PRMConvention, prompt: str, steps: list[str], tokenizer=None) -> tuple[str, list[int]]:
    """The PRM input text for one path and the character offset where each step's tag ends.

    Args:
        convention: the layout.
        prompt: the problem.
        steps: the path's steps, in order.
        tokenizer: needed only when ``convention.system_prompt`` is set (chat template).

    Returns:
        (text, tag_ends): ``text[tag_ends[j] - len(step_tag):tag_ends[j]] == step_tag``.

    Raises:
        ValueError: a chat-format convention with a tokenizer that has no chat template.
    """
    parts: list[str] = []
    tag_ends: list[int] = []
    length = 0
    for j, step in enumerate(steps):
        piece = (convention.step_join if j else "") + step + convention.step_tag
        parts.append(piece)
        length += len(piece)
        tag_ends.append(length)
    body = "".join(parts)
    if convention.system_prompt is None:
        head = prompt + convention.prompt_join
        return head + body, [len(head) + e for e in tag_ends]
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "this PRM convention renders paths with a chat template (system_prompt is set), "
            "but the tokenizer has none; set system_prompt=None or use a chat model's tokenizer"
        )
    messages = [
        {"role": "system", "content": convention.system_prompt},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": body},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    start = text.rfind(body)
    if start < 0:
        raise ValueError("the chat template rewrote the assistant's steps; cannot locate the step tags")
    return text, [start + e for e in tag_ends]


def tag_token_positions(offsets: list[tuple[int, int]], tag_ends: list[int]) -> list[int]:
    """Index of the token that holds the last character of each tag.

    Args:
        offsets: (start, end) character span of every token (special tokens: (0, 0)).
        tag_ends: character offsets from :func:`render_path`.

    Returns:
        One token index per tag, in order.

    Raises:
        ValueError: a tag whose last character no token covers (a truncated input).
    """
    positions = []
    t = 0
    for end in tag_ends:
        while t < len(offsets) and not (offsets[t][0] < end <= offsets[t][1]):
            t += 1
        if t == len(offsets):
            raise ValueError(f"no token covers the step tag ending at character {end}; was the input truncated?")
        positions.append(t)
    return positions


def label_token_ids(tokenizer, label_tokens: tuple[str, str]) -> tuple[int, int]:
    """Token ids of (good, bad); each label must be exactly one token.

    Raises:
        ValueError: a label that is not one token (the message names it and its ids).
    """
    ids = []
    for label in label_tokens:
        encoded = tokenizer.encode(label, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"PRM label token {label!r} must be exactly one token, got ids {encoded}")
        ids.append(encoded[0])
    return ids[0], ids[1]


def encode_path(tokenizer, convention: PRMConvention, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
    """Token ids of one path's PRM input and the token index where each step is scored.

    Raises:
        ValueError: a tokenizer without offset mapping (a slow tokenizer), or as :func:`render_path`.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("PRM scoring needs a fast tokenizer (character offsets); this checkpoint has a slow one")
    text, tag_ends = render_path(convention, prompt, steps, tokenizer)
    enc = tokenizer(text, return_offsets_mapping=True)
    return list(enc["input_ids"]), tag_token_positions(enc["offset_mapping"], tag_ends)


def step_probs(logits_at_tags, convention: PRMConvention) -> list[float]:
    """P(good) for each step from the logits at its tag.

    Args:
        logits_at_tags: (S, 2) torch tensor: in "label_tokens" mode the logits of
            (good, bad) label tokens, in "reward_head" mode the head's class logits (S, C).
        convention: which column means good.

    Returns:
        S floats in [0, 1].
    """
    probs = logits_at_tags.float().softmax(-1)  # (S, 2) or (S, C)
    good = 0 if convention.mode == "label_tokens" else convention.good_class
    return probs[:, good].tolist()
