"""A character-level tokenizer fitted to the step-by-step arithmetic tasks.

Every character is one token, so a step's text and its token ids map one to one:
stop strings, prefix-cache keys and token counts need no detokenisation tricks.
The alphabet is saved with the weights (``to_dict``), so a model always loads
with the tokenizer it was trained with.
"""

from __future__ import annotations

from typing import Iterable

PAD_ID = 0  # pads batches; never a target, never sampled
BOS_ID = 1  # starts every sequence, so position 0 is the same for every prompt
EOS_ID = 2  # ends a full solution
NUM_SPECIAL = 3

# Digits, operators, and the letters of "Input", "left" and "Answer" (Game of 24, ToT format).
DEFAULT_ALPHABET = "\n 0123456789+-*/()=:.AIeflnprstuw"


class CharTokenizer:
    """Maps text to token ids, one id per character, and back.

    Args:
        alphabet: the characters the model knows, in id order (ids start after the specials).

    Raises:
        ValueError: if the alphabet repeats a character.
    """

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet repeats a character: {alphabet!r}")
        self.alphabet = alphabet
        self._id_of = {ch: NUM_SPECIAL + i for i, ch in enumerate(alphabet)}  # char -> token id

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharTokenizer":
        """A tokenizer whose alphabet is every character of ``texts``, in sorted order."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls("".join(sorted(chars)))

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self.alphabet)

    def encode(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text``, with a leading BOS if ``bos``.

        Raises:
            ValueError: if ``text`` has a character outside the alphabet (the message names it).
        """
        try:
            ids = [self._id_of[ch] for ch in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the embedded model's alphabet "
                             f"{self.alphabet!r}; it only reads the tasks it was trained on") from None
        return [BOS_ID, *ids] if bos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens decode to nothing."""
        return "".join(self.alphabet[i - NUM_SPECIAL] for i in ids if i >= NUM_SPECIAL)

    def char_id(self, ch: str) -> int:
        """The token id of one character (e.g. the step delimiter)."""
        return self.encode(ch)[0]

    def to_dict(self) -> dict:
        return {"alphabet": self.alphabet}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        return cls(data["alphabet"])
