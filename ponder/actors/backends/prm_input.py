"""A path as PRM input: the token ids of one (problem, steps) and the position scored per step.

Pure functions over a tokenizer, no model, shared by the hf and vllm verifiers, so
that what a PRM reads can be tested exactly. One function per layout of
:class:`~ponder.actors.backends.prm.PRMConvention`:

- "tagged": the text ``problem + prompt_join + step_1 + tag + step_join + ...``
  (inside the chat template when ``system_prompt`` is set), tokenized at once;
  the scored token is the one holding each tag's last character, found by
  character offsets, so a tag that splits into several tokens still works.
- "chat_turns": the chat template over user = step, assistant = "+" turns; the
  scored token is the last one before each assistant reply (it predicts the reply).
- "step_tokens": ids built piece by piece as Skywork's ``prepare_input`` does:
  ``bos + problem + "\\n"``, then every line of every step encoded on its own and
  followed by the id of the "\\n" token; the scored token is the one ending each step.

Chat-rendered texts are tokenized without adding special tokens: the template
writes them, as ``apply_chat_template(tokenize=True)`` does.
"""

from __future__ import annotations

from ponder.actors.backends.prm import PRMConvention


def encode_path(tokenizer, convention: PRMConvention, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
    """Token ids of one path's PRM input and the token index where each step is scored.

    Args:
        tokenizer: the PRM's fast tokenizer.
        convention: the layout.
        prompt: the problem.
        steps: the path's steps, in order (at least one).

    Returns:
        (input_ids, positions): one position per step, in order.

    Raises:
        ValueError: a slow tokenizer (no character offsets), a chat layout with a
            tokenizer that has no chat template, or a layout the tokenizer cannot
            express (the message says which).
    """
    if convention.layout == "step_tokens":
        return _encode_step_tokens(tokenizer, convention, prompt, steps)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("PRM scoring needs a fast tokenizer (character offsets); this checkpoint has a slow one")
    if convention.layout == "chat_turns":
        text, reply_starts = render_chat_turns(convention, prompt, steps, tokenizer)
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        return list(enc["input_ids"]), reply_token_positions(enc["offset_mapping"], reply_starts)
    text, tag_ends = render_path(convention, prompt, steps, tokenizer)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=convention.system_prompt is None)
    return list(enc["input_ids"]), tag_token_positions(enc["offset_mapping"], tag_ends)


def check_length(num_tokens: int, max_length: int | None, request_id: int, path_index: int) -> None:
    """Raise before a path longer than the PRM's context reaches the model.

    Raises:
        ValueError: naming the request, the path and both lengths.
    """
    if max_length is not None and num_tokens > max_length:
        raise ValueError(
            f"request {request_id}: path {path_index} is {num_tokens} PRM tokens, more than the PRM's "
            f"max length {max_length}; shorten the steps or raise the verifier's max_length"
        )


def encode_requests(tokenizer, convention: PRMConvention, requests, max_length: int | None
                    ) -> list[tuple[int, int, list[int], list[int]]]:
    """Every non-empty path of ``requests`` in the PRM's layout, checked against ``max_length``.

    Returns:
        ``(request index, path index, token ids, scored positions)`` for each non-empty path.

    Raises:
        ValueError: a path longer than ``max_length`` (``check_length``), before any model call.
    """
    encoded = []
    for i, req in enumerate(requests):
        for j, steps in enumerate(req.paths):
            if steps:
                ids, positions = encode_path(tokenizer, convention, req.prompt, steps)
                check_length(len(ids), max_length, req.request_id, j)
                encoded.append((i, j, ids, positions))
    return encoded


def _step_text(convention: PRMConvention, j: int, step: str) -> str:
    prefix = convention.step_prefix.format(k=j + 1) if convention.step_prefix else ""
    if prefix and step.startswith(prefix.rstrip()):
        return step  # the generator already numbered it
    return prefix + step


def render_path(convention: PRMConvention, prompt: str, steps: list[str], tokenizer=None) -> tuple[str, list[int]]:
    """The "tagged" PRM input text for one path and the character offset where each step's tag ends.

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
        piece = (convention.step_join if j else "") + _step_text(convention, j, step) + convention.step_tag
        parts.append(piece)
        length += len(piece)
        tag_ends.append(length)
    body = "".join(parts)
    if convention.system_prompt is None:
        head = prompt + convention.prompt_join
        return head + body, [len(head) + e for e in tag_ends]
    messages = [
        {"role": "system", "content": convention.system_prompt},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": body},
    ]
    text = _chat(tokenizer, messages, add_generation_prompt=False)
    start = text.rfind(body)
    if start < 0:
        raise ValueError("the chat template rewrote the assistant's steps; cannot locate the step tags")
    return text, [start + e for e in tag_ends]


def render_chat_turns(convention: PRMConvention, prompt: str, steps: list[str], tokenizer) -> tuple[str, list[int]]:
    """The "chat_turns" text (RLHFlow) and the character offset where each assistant reply starts.

    The first user turn is ``prompt + prompt_join + step_1``, each later one a step;
    every assistant turn is the good label ("+"), as in training.

    Raises:
        ValueError: no chat template, or one whose rendering of a shorter chat
            (with the generation prompt) is not a prefix of the full one.
    """
    good = convention.label_tokens[0]
    messages: list[dict[str, str]] = []
    for j, step in enumerate(steps):
        messages.append({"role": "user", "content": (prompt + convention.prompt_join + step) if j == 0 else step})
        messages.append({"role": "assistant", "content": good})
    text = _chat(tokenizer, messages, add_generation_prompt=False)
    reply_starts = []
    for j in range(len(steps)):
        # Up to the assistant header of turn j: a prefix of the full text when the
        # template renders earlier turns the same whatever follows (chat templates do).
        head = _chat(tokenizer, messages[:2 * j + 1], add_generation_prompt=True)
        if not (text.startswith(head) and text.startswith(good, len(head))):
            raise ValueError(f"the chat template does not render step {j}'s assistant reply {good!r} right after "
                             "its generation prompt; cannot locate where the PRM is read")
        reply_starts.append(len(head))
    return text, reply_starts


def _chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "this PRM convention renders paths with a chat template, but the tokenizer has none; "
            "use the PRM checkpoint's own tokenizer, or a convention without system_prompt"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tag_token_positions(offsets: list[tuple[int, int]], tag_ends: list[int]) -> list[int]:
    """Index of the token that holds the last character of each tag.

    Args:
        offsets: (start, end) character span of every token (added specials: (0, 0)).
        tag_ends: character offsets from :func:`render_path`.

    Returns:
        One token index per tag, in order.

    Raises:
        ValueError: a tag whose last character no token covers.
    """
    positions = []
    t = 0
    for end in tag_ends:
        while t < len(offsets) and not (offsets[t][0] < end <= offsets[t][1]):
            t += 1
        if t == len(offsets):
            raise ValueError(f"no token covers the step tag ending at character {end}")
        positions.append(t)
    return positions


def reply_token_positions(offsets: list[tuple[int, int]], reply_starts: list[int]) -> list[int]:
    """Index of the token just before the token that starts at each reply offset.

    Raises:
        ValueError: a reply that does not start a token of its own (the tokenizer
            merged it with what precedes it, so no position predicts it alone).
    """
    positions = []
    t = 0
    for start in reply_starts:
        while t < len(offsets) and not (offsets[t][0] == start and offsets[t][1] > start):
            t += 1
        if t == len(offsets) or t == 0:
            raise ValueError(f"the assistant reply at character {start} does not start a token of its own")
        positions.append(t - 1)
    return positions


def _encode_step_tokens(tokenizer, convention: PRMConvention, prompt: str,
                        steps: list[str]) -> tuple[list[int], list[int]]:
    """Skywork's layout, built from ids (each piece tokenized alone), so no offsets are needed."""
    if tokenizer.bos_token is None:
        raise ValueError("the step_tokens layout (Skywork PRM) starts with the tokenizer's BOS token, "
                         "but this tokenizer defines none")
    sep = convention.step_tag
    sep_id = tokenizer.encode(sep, add_special_tokens=False)[-1]
    ids = tokenizer.encode(tokenizer.bos_token + prompt + convention.prompt_join, add_special_tokens=False)
    positions = []
    for step in steps:
        # A step holding the separator is several of Skywork's lines: each is encoded
        # on its own, and the step is read at the separator after its last line.
        for line in step.split(sep):
            if line:
                ids.extend(tokenizer.encode(line, add_special_tokens=False))
            ids.append(sep_id)
        positions.append(len(ids) - 1)
    return ids, positions


def label_token_ids(tokenizer, label_tokens: tuple[str, str]) -> tuple[int, int]:
    """Token ids of (good, bad), each label encoded alone; each must be exactly one token.

    Encoded alone, "+" is Mistral's "▁+" (Math-Shepherd's ``encode("+ -")[1:]``) and
    Llama 3's "+" (RLHFlow's ``encode("+")[-1]``).

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
