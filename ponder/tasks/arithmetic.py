"""Exact arithmetic steps shared by game24 and countdown (Tree of Thoughts format).

A state is the list of numbers still ``left`` (ascending) and, for each, the expression
that built it from the inputs. A step combines two of them::

    10 - 4 = 6 (left: 5 6 6)

``+`` and ``*`` name their operands in ``left`` order (smaller first); ``-`` always
subtracts the smaller from the larger, so no value goes negative (any solution can be
rewritten that way); ``/`` is generated in both directions, because ``3 / 4`` is needed
by puzzles like ``1 3 4 6 -> 6 / (1 - 3/4)``. Values are exact ``Fraction``s, written
``5/3``. The final line restates the whole expression: ``Answer: (5 * (10 - 4)) - 6 = 24``.
The checkers accept any exactly right arithmetic, not only these canonical forms.
"""

from __future__ import annotations

import bisect
import random
import re
from fractions import Fraction
from typing import Iterable, NamedTuple, Sequence


ANSWER_PREFIX = "Answer:"
Value = int | Fraction  # exact; whole numbers are kept as int for speed
_NUM = r"-?\d+(?:/\d+)?"
_OP_ALIASES = {"×": "*", "x": "*", "÷": "/", "−": "-"}
STEP_RE = re.compile(rf"^\s*({_NUM})\s*([-+*/×÷−])\s*({_NUM})\s*=\s*({_NUM})\s*"
                      rf"\(\s*left\s*:\s*([^)]*)\)\s*$")


def fmt(value: Fraction | int) -> str:
    """Write a number as the step format does: ``6``, ``5/3``, ``-1/4``."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _as_value(x: Fraction) -> Value:
    if type(x) is int:
        return x
    return x.numerator if x.denominator == 1 else x


def parse_number(text: str) -> Fraction:
    """Parse ``6``, ``-2`` or ``5/3`` exactly. Raises ValueError on anything else."""
    if not re.fullmatch(_NUM, text.strip()):
        raise ValueError(f"not a number in step format: {text!r}")
    try:
        return Fraction(text.strip())
    except ZeroDivisionError:  # "60/0": a model can write it; it is not a number
        raise ValueError(f"not a number in step format: {text!r}") from None


def parse_left(text: str) -> list[Fraction]:
    """Numbers of a ``left:`` list, separated by spaces or commas."""
    return [parse_number(t) for t in re.split(r"[\s,]+", text.strip()) if t]


def apply_op(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    """``a op b`` exactly; None for division by zero."""
    op = _OP_ALIASES.get(op, op)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    raise ValueError(f"unknown operator {op!r}; valid: + - * /")


class State(NamedTuple):
    """Numbers left (ascending) and the expression that built each (``exprs[i]``)."""

    numbers: tuple[Fraction, ...]
    exprs: tuple[str, ...]

    @classmethod
    def initial(cls, numbers: Iterable[int | Fraction]) -> "State":
        """The start state: the inputs, sorted, each its own expression."""
        values = sorted(_as_value(Fraction(n)) for n in numbers)
        return cls(tuple(values), tuple(fmt(v) for v in values))

    def left_text(self) -> str:
        return " ".join(fmt(v) for v in self.numbers)


class StepOption(NamedTuple):
    """One legal step from a state: its text and the state it leads to."""

    text: str
    left: tuple[Fraction, ...]
    exprs: tuple[str, ...]


def _wrap(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


def _moves(numbers: Sequence[Value]):
    """Yield ``(x, op, y, value)``: index pairs and results of canonical steps."""
    n = len(numbers)
    for i in range(n):
        a = numbers[i]
        for j in range(i + 1, n):
            b = numbers[j]  # a <= b since numbers are ascending
            if type(a) is int and type(b) is int:
                yield i, "+", j, a + b
                yield i, "*", j, a * b
                yield j, "-", i, b - a
            else:
                yield i, "+", j, _as_value(a + b)
                yield i, "*", j, _as_value(a * b)
                yield j, "-", i, _as_value(b - a)
            if a != 0:
                yield j, "/", i, _div(b, a)
            if b != 0 and a != b:
                yield i, "/", j, _div(a, b)


def _div(a: Value, b: Value) -> Value:
    # Whole values stay ints: int arithmetic is much cheaper than Fraction's, and
    # enumerating every puzzle's solutions is dominated by it.
    if isinstance(a, int) and isinstance(b, int):
        return a // b if a % b == 0 else Fraction(a, b)
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


def _apply_move(state: State, x: int, op: str, y: int, value: Fraction) -> StepOption:
    nums, exprs = list(state.numbers), list(state.exprs)
    expr = f"{_wrap(exprs[x])} {op} {_wrap(exprs[y])}"
    text_head = f"{fmt(nums[x])} {op} {fmt(nums[y])} = {fmt(value)}"
    for k in sorted((x, y), reverse=True):
        del nums[k], exprs[k]
    pos = bisect.bisect_right(nums, value)
    nums.insert(pos, value)
    exprs.insert(pos, expr)
    left = " ".join(fmt(v) for v in nums)
    return StepOption(f"{text_head} (left: {left})", tuple(nums), tuple(exprs))


def step_options(state: State) -> list[StepOption]:
    """Every canonical step from ``state``, deduplicated by text and resulting expressions.

    Args:
        state: the current ``State`` (see ``State.initial``).
    Returns:
        ``StepOption(text, left, exprs)`` per distinct step; ``State(opt.left, opt.exprs)``
        continues from it.
    """
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for move in _moves(state.numbers):
        opt = _apply_move(state, *move)
        if (opt.text, opt.exprs) not in seen:
            seen.add((opt.text, opt.exprs))
            out.append(opt)
    return out


def answer_line(expr: str, target: Fraction | int) -> str:
    """The final step: ``Answer: <expr> = <target>``."""
    return f"{ANSWER_PREFIX} {expr} = {fmt(target)}"


def solve(numbers: Iterable[int], target: int, use_all: bool = True,
          limit: int | None = None) -> list[list[str]]:
    """Every distinct canonical step sequence that reaches ``target``.

    Args:
        numbers: the inputs.
        target: the value to reach.
        use_all: True for game24 (every input exactly once, answer after the last step);
            False for countdown (at most once, answer as soon as a built number hits it).
        limit: stop after this many solutions (None: all).
    Returns:
        Lists of step lines, each ending with an ``Answer:`` line.
    """
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    start = State.initial(numbers)
    _search(start, list(start.numbers), _as_value(Fraction(target)), use_all, [], out, seen, limit)
    return out


def _search(start: State, nums: list[Fraction], target: Fraction, use_all: bool,
            path: list[tuple], out: list[list[str]], seen: set, limit: int | None) -> None:
    # Walks values only and writes text just for solutions: formatting every visited
    # state would cost most of the time of enumerating all puzzles.
    if limit is not None and len(out) >= limit:
        return
    n = len(nums)
    if path and (n == 1 or not use_all) and target in nums:
        steps, state = _replay_moves(start, path)
        hit = next((e for v, e in zip(state.numbers, state.exprs) if v == target and " " in e), None)
        if hit is not None:
            _record(steps + [answer_line(hit, target)], out, seen)
            if not use_all:
                return  # going on past the target only pads the path
    if n == 1 or (use_all and n == 2 and not _pair_can_hit(nums, target)):
        return  # the pair test is a cheap leaf pruning: most pairs cannot reach the target
    for move in _moves(nums):
        x, _, y, value = move
        rest = [v for k, v in enumerate(nums) if k != x and k != y]
        bisect.insort_right(rest, value)
        _search(start, rest, target, use_all, path + [move], out, seen, limit)


def _replay_moves(start: State, path: list[tuple]) -> tuple[list[str], State]:
    state, steps = start, []
    for move in path:
        opt = _apply_move(state, *move)
        steps.append(opt.text)
        state = State(opt.left, opt.exprs)
    return steps, state


def _pair_can_hit(pair: Sequence[Fraction], target: Fraction) -> bool:
    a, b = pair
    return (a + b == target or a * b == target or b - a == target
            or (a != 0 and b == target * a) or (b != 0 and a == target * b))


def _record(steps: list[str], out: list[list[str]], seen: set) -> None:
    key = tuple(steps)
    if key not in seen:
        seen.add(key)
        out.append(steps)


def random_trace(numbers: Iterable[int], target: int, rng: random.Random,
                 num_steps: int | None = None) -> tuple[list[str], bool]:
    """A random walk of canonical steps, for partial and wrong training traces.

    Args:
        numbers: the inputs.
        target: the value an ``Answer:`` line would claim.
        rng: the random source.
        num_steps: how many operations to take (default: until one number is left).
    Returns:
        ``(steps, reached)``: the step lines, with an ``Answer:`` line appended only if
        the walk used every number and reached ``target``; ``reached`` says which.
    """
    state = State.initial(numbers)
    num_steps = len(state.numbers) - 1 if num_steps is None else num_steps
    steps = []
    for _ in range(min(num_steps, len(state.numbers) - 1)):
        opt = rng.choice(step_options(state))
        steps.append(opt.text)
        state = State(opt.left, opt.exprs)
    reached = len(state.numbers) == 1 and state.numbers[0] == target
    if reached:
        steps.append(answer_line(state.exprs[0], target))
    return steps, reached


def replay(numbers: Iterable[int], steps: Sequence[str]) -> State | None:
    """The state after canonical ``steps`` (Answer lines ignored); None if one does not apply."""
    state = State.initial(numbers)
    for step in steps:
        if is_answer(step):
            continue
        match = next((o for o in step_options(state) if o.text == step.strip()), None)
        if match is None:
            return None
        state = State(match.left, match.exprs)
    return state


def is_answer(step: str) -> bool:
    """True if ``step`` is an ``Answer:`` line."""
    return step.lstrip().startswith(ANSWER_PREFIX)

