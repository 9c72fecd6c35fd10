"""Checking arithmetic paths exactly: an operation line, or an ``Answer:`` expression.

Used by game24 (every input exactly once) and countdown (each input at most once).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Sequence

from ponder.tasks.arithmetic import (ANSWER_PREFIX, STEP_RE, apply_op, is_answer, parse_left,
                                     parse_number)
from ponder.tasks.expression import try_parse


def answer_expression(step: str) -> str | None:
    """The expression of an ``Answer:`` line, canonically spaced; None if not one.

    ``"Answer: (5*(10-4)) - 6 = 24"`` gives ``"(5 * (10 - 4)) - 6"``. Text that does not
    parse is returned with its whitespace collapsed, so equal junk still votes together.
    """
    if not is_answer(step):
        return None
    body = step.lstrip()[len(ANSWER_PREFIX):]
    expr = body.split("=")[0].strip()
    if not expr:
        return None
    parsed = try_parse(expr)
    return parsed.canonical if parsed is not None else " ".join(expr.split())


def verify_expression(inputs: Sequence[int], expr: str | None, target: Fraction | int,
                      use_all: bool = True) -> bool:
    """True if ``expr`` equals ``target`` exactly using the inputs as allowed.

    Args:
        inputs: the problem's numbers.
        expr: an expression, or a whole ``Answer: ... = T`` line.
        target: the required value.
        use_all: every input exactly once (game24) or each at most once (countdown).
    """
    if expr is None:
        return False
    if is_answer(expr):
        expr = answer_expression(expr)
    parsed = try_parse(expr or "")
    if parsed is None or parsed.value is None or parsed.value != target:
        return False
    used, have = Counter(parsed.literals), Counter(int(n) for n in inputs)
    return used == have if use_all else not (used - have)


def check_arith_step(inputs: Sequence[int], steps: Sequence[str], target: Fraction | int,
                     use_all: bool = True) -> bool:
    """True if the last of ``steps`` is right given the one before it.

    An operation line must have exact arithmetic, take its operands from the previous
    ``left`` list (the inputs for the first step) and list exactly what remains plus the
    result. An ``Answer:`` line must verify.
    """
    if not steps:
        return False
    last = steps[-1]
    if is_answer(last):
        return verify_expression(inputs, last, target, use_all)
    prev = _left_before(inputs, steps)
    match = STEP_RE.match(last)
    if prev is None or match is None:
        return False
    a, op, b, result, left = match.groups()
    try:
        a, b, result, left = parse_number(a), parse_number(b), parse_number(result), parse_left(left)
    except ValueError:
        return False
    if apply_op(a, op, b) != result:
        return False
    remaining = Counter(prev)
    remaining.subtract([a, b])
    if any(c < 0 for c in remaining.values()):
        return False
    remaining[result] += 1
    return +remaining == Counter(left)


def left_of(step: str) -> list[Fraction] | None:
    """The numbers of an operation step's ``left:`` list; None if ``step`` does not parse as one."""
    match = STEP_RE.match(step)
    if match is None:
        return None
    try:
        return parse_left(match.group(5))
    except ValueError:
        return None


def _left_before(inputs: Sequence[int], steps: Sequence[str]) -> list[Fraction] | None:
    if len(steps) == 1:
        return [Fraction(n) for n in inputs]
    return left_of(steps[-2])
