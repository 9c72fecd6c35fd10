"""How a generate request's prefix becomes the text an instruct model reads.

A request's ``prefix`` is the task's prompt followed by the steps so far
(``GenerateRequest.prompt_end`` says where the prompt ends). With a chat
template the prompt becomes the user turn, after the task's system prompt and
few-shot turns, and the steps so far continue the assistant turn that the
template's generation prompt opens, so the model writes the next step of its
own answer. Without one, the system prompt and few-shot examples are plain
text ahead of the prefix.

The template is ``"auto"`` (the tokenizer's own, raw text if it has none),
``"none"`` (raw text), a Jinja file path, or Jinja text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

TEMPLATE_MODES = ("auto", "none")  # besides these, a Jinja file path or Jinja text
_MAX_CACHED_HEADS = 4096  # rendered heads kept: one per problem prompt in flight


def resolve_template(tokenizer, chat_template: str | None) -> str | None:
    """The Jinja text to render with, or None for raw prompts.

    Args:
        tokenizer: a transformers tokenizer (its ``chat_template`` serves ``"auto"``).
        chat_template: ``"auto"``, ``"none"`` (or None), a file path, or Jinja text.

    Raises:
        ValueError: a value that is no mode, no existing file and no Jinja text
            (names ``chat_template``).
    """
    if chat_template in (None, "none"):
        return None
    if chat_template == "auto":
        return getattr(tokenizer, "chat_template", None) or None
    if "{{" in chat_template or "{%" in chat_template:
        return chat_template
    path = Path(chat_template).expanduser()
    if not path.is_file():
        raise ValueError(f"chat_template must be 'auto', 'none', a Jinja file or Jinja text; "
                         f"{chat_template!r} is no file")
    return path.read_text()


class ChatFormat:
    """Renders prefixes for one tokenizer; the backend's view of a task's prompt format.

    Args:
        tokenizer: a transformers tokenizer.
        chat_template: see ``resolve_template``.
        system_prompt: the task's system turn; None leaves the template's default.
        few_shot: ``(prompt, answer)`` pairs, rendered as earlier user / assistant turns.

    Raises:
        ValueError: a bad ``chat_template``.
    """

    def __init__(self, tokenizer, chat_template: str | None = "auto", system_prompt: str | None = None,
                 few_shot: Sequence[Sequence[str]] = ()):
        self.tokenizer = tokenizer
        self.template = resolve_template(tokenizer, chat_template)
        self.system_prompt = system_prompt
        self.few_shot = [(str(q), str(a)) for q, a in few_shot]
        self._heads: dict[str, str] = {}  # prompt -> rendered text up to the assistant turn

    @property
    def add_special_tokens(self) -> bool:
        """Whether tokenizing a rendered prompt adds the tokenizer's specials (BOS): not when
        a template wrote its own, else twice."""
        return self.template is None

    def render(self, prefix: str, prompt_end: int | None = None) -> str:
        """The text the model continues: ``prefix``'s prompt in the chat format, then its steps.

        Args:
            prefix: a request's prompt followed by the steps so far.
            prompt_end: where the prompt ends in ``prefix``; None: it is all prompt.

        Raises:
            ValueError: ``prompt_end`` outside ``prefix``.
        """
        end = len(prefix) if prompt_end is None else prompt_end
        if not 0 <= end <= len(prefix):
            raise ValueError(f"prompt_end {prompt_end} is outside the prefix (length {len(prefix)})")
        prompt, partial = prefix[:end], prefix[end:]
        head = self._heads.get(prompt)
        if head is None:
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            head = self._heads[prompt] = self._render_head(prompt)
        return head + partial

    def encode(self, prefix: str, prompt_end: int | None = None) -> list[int]:
        """Token ids of ``render(prefix, prompt_end)``."""
        text = self.render(prefix, prompt_end)
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def overhead_tokens(self) -> int:
        """Tokens the format adds to a prompt beyond its own (turn markers, system prompt,
        few-shot turns): what a reservation's byte-count bound of the prompt text misses."""
        probe = "x"
        plain = len(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
        return max(0, len(self.encode(probe)) - plain)

    def _render_head(self, prompt: str) -> str:
        # A few-shot example is a train problem: solving that same problem, it would show its answer.
        examples = [(q, a) for q, a in self.few_shot if q.strip() != prompt.strip()]
        if self.template is None:
            shots = "".join(f"{q}{a}\n\n" for q, a in examples)
            system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            return system + shots + prompt
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for q, a in examples:
            messages += [{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]
        # The prompt's trailing newline belongs to raw continuation, not to a user turn.
        messages.append({"role": "user", "content": prompt.strip()})
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=True)
