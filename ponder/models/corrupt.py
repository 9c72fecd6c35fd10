"""Near-miss mistakes in Game-of-24 steps: the verifier's hard negatives.

Search on new puzzles mostly fails on steps that *look* right: ``8 + 12 = 24
(left: 24)`` (arithmetic bent towards 24), ``15 + 15 = 24`` when one 15 was
left (a number used twice), a ``left:`` list that lost or gained a number, an
``Answer:`` line that does not match its steps. The generator makes few such
mistakes on its own train puzzles, so its plain rollouts rarely show them to the
verifier. ``corrupt_step`` writes one; ``collect_rollouts`` puts it into a path
and lets the generator carry on, and the path is labelled like any other
rollout: by whether its final answer is right.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from ponder.tasks.arithmetic import STEP_RE, apply_op, fmt, parse_left

_ANSWER_RE = re.compile(r"^(Answer:\s*)(.*?)(\s*=\s*24\s*)$")
_NUMBER_IN_EXPR = re.compile(r"\d+")


def corrupt_step(step: str, rng: random.Random) -> str | None:
    """A plausible wrong version of ``step`` (an operation or an ``Answer:`` line); None if unparsable."""
    if step.startswith("Answer:"):
        return _corrupt_answer(step, rng)
    match = STEP_RE.match(step)
    if match is None:
        return None
    a, op, b, result, left = match.groups()
    value = Fraction(result)
    others = parse_left(left)
    others.remove(value) if value in others else None  # the numbers the step did not touch
    kind = rng.choice(("arithmetic", "arithmetic", "bookkeeping", "operand"))
    if kind == "arithmetic":  # a wrong value, booked consistently
        wishful = not others and value != 24 and rng.random() < 0.5  # a last step "reaching" 24
        wrong = Fraction(24) if wishful else _nearby(value, rng)
        return _format(a, op, b, wrong, others + [wrong])
    if kind == "bookkeeping":  # the right value, a wrong left list
        return _format(a, op, b, value, _mangle(others, rng) + [value])
    # an operand the state does not hold (often one used twice), computed honestly
    bogus = rng.choice([Fraction(a), Fraction(b), Fraction(rng.randint(1, 13))])
    new_b = fmt(bogus)
    if new_b == b:
        new_b = fmt(bogus + rng.choice((1, 2, -1)))
    wrong = apply_op(Fraction(a), op, Fraction(new_b))
    if wrong is None:
        return None
    return _format(a, op, new_b, wrong, others + [wrong])


def _nearby(value: Fraction, rng: random.Random) -> Fraction:
    for _ in range(10):
        wrong = rng.choice((value + rng.randint(1, 4), value - rng.randint(1, 4), value * 2, Fraction(24)))
        if wrong != value and wrong >= 0:
            return wrong
    return value + 1


def _mangle(numbers: list[Fraction], rng: random.Random) -> list[Fraction]:
    """``numbers`` with one dropped, duplicated or changed (never unchanged)."""
    numbers = list(numbers)
    choices = ["add"] + (["drop", "duplicate", "change"] if numbers else [])
    kind = rng.choice(choices)
    if kind == "add":
        return numbers + [Fraction(rng.randint(1, 13))]
    i = rng.randrange(len(numbers))
    if kind == "drop":
        return numbers[:i] + numbers[i + 1:]
    if kind == "duplicate":
        return numbers + [numbers[i]]
    numbers[i] = _nearby(numbers[i], rng)
    return numbers


def _format(a: str, op: str, b: str, value: Fraction, left: list[Fraction]) -> str:
    return f"{a} {op} {b} = {fmt(value)} (left: {' '.join(fmt(x) for x in sorted(left))})"


def _corrupt_answer(step: str, rng: random.Random) -> str | None:
    """The answer line with one number changed or one operator swapped."""
    match = _ANSWER_RE.match(step)
    if match is None:
        return None
    head, expr, tail = match.groups()
    numbers = list(_NUMBER_IN_EXPR.finditer(expr))
    operators = [i for i, c in enumerate(expr) if c in "+-*/"]
    if rng.random() < 0.5 and numbers:
        m = rng.choice(numbers)
        old = int(m.group())
        new = str(old + rng.choice((-2, -1, 1, 2) if old > 2 else (1, 2)))
        expr = expr[:m.start()] + new + expr[m.end():]
    elif operators:
        i = rng.choice(operators)
        expr = expr[:i] + rng.choice([o for o in "+-*/" if o != expr[i]]) + expr[i + 1:]
    else:
        return None
    return head + expr + tail
