"""A tiny, safe parser for arithmetic answers like ``(5 * (10 - 4)) - 6``.

Nothing is ever ``eval``-ed: the grammar is integers, binary ``+ - * /`` and parentheses,
evaluated with exact ``Fraction``s. Unary minus and decimals are rejected, since the
number games allow neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_TOKEN_RE = re.compile(r"\s*(?:(\d+)|([-+*/()]))")
_ALIASES = str.maketrans({"×": "*", "÷": "/", "−": "-", "·": "*"})
MAX_EXPR_CHARS = 400  # longer "answers" are junk; this also bounds parser recursion


@dataclass(slots=True)
class Parsed:
    """A parsed expression: its exact value (None after a division by zero) and literals."""

    value: Fraction | None
    literals: list[int]  # every integer written in the expression, in order
    canonical: str  # the tokens re-joined with canonical spacing


def _tokenize(text: str) -> list[str]:
    text = text.translate(_ALIASES).strip()
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"unexpected {text[pos:pos + 10]!r} in expression {text!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.literals = tokens, 0, []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError("expression ends too early")
        self.pos += 1
        return token

    def expr(self) -> Fraction | None:
        value = self.term()
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term()
            value = None if value is None or rhs is None else (value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction | None:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor()
            if value is None or rhs is None or (op == "/" and rhs == 0):
                value = None
            else:
                value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self) -> Fraction | None:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if token.isdigit():
            self.literals.append(int(token))
            return Fraction(int(token))
        raise ValueError(f"expected a number or '(', got {token!r}")


def canonical_spacing(tokens: list[str]) -> str:
    """Join tokens as ``(5 * (10 - 4)) - 6``: spaces around operators, none inside parens."""
    out = ""
    for tok in tokens:
        if tok in "+-*/":
            out += f" {tok} "
        else:
            out += tok
    return out


def parse_expression(text: str) -> Parsed:
    """Parse and evaluate an arithmetic answer exactly.

    Args:
        text: e.g. ``"6 / (1 - 3/4)"``; ``×``/``÷`` are accepted for ``*``/``/``.
    Returns:
        A ``Parsed`` with the value (None on division by zero) and the integer literals.
    Raises:
        ValueError: if ``text`` is not a well-formed expression of the grammar above.
    """
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPR_CHARS} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise ValueError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r} after a complete expression in {text!r}")
    return Parsed(value, parser.literals, canonical_spacing(tokens))


def try_parse(text: str) -> Parsed | None:
    """``parse_expression`` that returns None instead of raising."""
    try:
        return parse_expression(text)
    except (ValueError, RecursionError):
        return None
