"""Exact step labels for the verifier: can a right answer still be reached from here?

Math-Shepherd (Wang et al. 2024) labels a step good if any of N sampled
completions from it reaches the right answer ("hard estimation"). On Game of 24
the completions can be enumerated exhaustively, so the label is that estimate
with N -> infinity: a step is good if every step so far is right (exact
arithmetic, operands taken from the numbers left, an honest ``left:`` list) and
the numbers it leaves can still make 24 (for an ``Answer:`` line: the answer
verifies). From the first bad step on, every label is 0.

Outcome labels from the generator's own rollouts (``data.step_targets``) say
how often *this generator* wins from a state, which a few samples estimate
noisily, and they cannot blame a wrong step whose path happens to end right.
These labels are exact, cost no rollouts, and can be put on any path: the
generator's rollouts, random walks, near-miss mistakes and search traces alike.
"""

from __future__ import annotations

import random
from fractions import Fraction
from functools import lru_cache

from ponder.models.corrupt import corrupt_step
from ponder.models.data import assert_not_test
from ponder.tasks import game24
from ponder.tasks.arith_check import left_of

_TARGET = Fraction(game24.TARGET)


@lru_cache(maxsize=1 << 18)
def _can_make(values: tuple[Fraction, ...]) -> bool:
    if len(values) == 1:
        return values[0] == _TARGET
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            a, b = values[i], values[j]
            rest = values[:i] + values[i + 1:j] + values[j + 1:]
            results = {a + b, a * b, a - b, b - a}
            if b:
                results.add(a / b)
            if a:
                results.add(b / a)
            if any(_can_make(tuple(sorted(rest + (r,)))) for r in results):
                return True
    return False


def can_make_24(values) -> bool:
    """True if ``values`` (each used exactly once, ``+ - * /``) can make exactly 24."""
    return _can_make(tuple(sorted(Fraction(v) for v in values)))


def exact_step_labels(numbers, steps: list[str]) -> list[float]:
    """Per step of a path on puzzle ``numbers``: 1.0 if a right answer is still reachable, else 0.0.

    Raises:
        AssertionError: if ``numbers`` is a test puzzle (labels are training data).
    """
    assert_not_test(numbers)
    return step_verdicts(numbers, steps)


def step_verdicts(numbers, steps: list[str]) -> list[float]:
    """``exact_step_labels`` without the test-split guard: for judging runs, never for training data."""
    labels, alive = [], True
    for j, step in enumerate(steps):
        if alive:
            alive = game24.check_step(numbers, steps[:j + 1])
        if alive and not game24.is_terminal(step):
            left = left_of(step)
            alive = left is not None and can_make_24(left)
        labels.append(1.0 if alive else 0.0)
    return labels


def synthetic_paths(numbers, rng: random.Random, num_walks: int = 6, num_solutions: int = 2,
                    num_corrupt: int = 4) -> list[list[str]]:
    """Paths on one train puzzle that show the verifier every kind of state search meets.

    Random valid walks (mostly into dead ends; an ``Answer:`` line where one reaches
    24, else a wishful one), some of the puzzle's solutions, and near-miss mistakes
    (``corrupt.corrupt_step``) put into a solution or a walk, cut after the mistake.
    """
    assert_not_test(numbers)
    paths = []
    sols = game24.solutions(numbers)
    for _ in range(num_walks):
        steps, reached = game24.random_trace(numbers, rng, rng.choice((1, 2, 3, 3)))
        if len(steps) == 3 and not reached:  # the generator writes an answer line even then
            steps.append(_wishful_answer(numbers, rng))
        paths.append(steps)
    for _ in range(min(num_solutions, len(sols))):
        paths.append(list(rng.choice(sols)))
    for _ in range(num_corrupt):
        base = rng.choice(sols) if sols and rng.random() < 0.5 else game24.random_trace(numbers, rng)[0]
        if not base:
            continue
        j = rng.randrange(len(base))
        bad = corrupt_step(base[j], rng)
        if bad is not None and bad != base[j]:
            paths.append(list(base[:j]) + [bad])
    return paths


def _wishful_answer(numbers, rng: random.Random) -> str:
    shuffled = list(numbers)
    rng.shuffle(shuffled)
    ops = [rng.choice("+-*/") for _ in range(3)]
    a, b, c, d = shuffled
    return game24.answer_line(f"(({a} {ops[0]} {b}) {ops[1]} {c}) {ops[2]} {d}")


def labelled_paths(puzzles, rng: random.Random, rollout_paths=(), per_puzzle: int = 24) -> list:
    """``(numbers, steps, labels)`` for ``VerifierBatcher``: sampled plus synthetic paths, exact labels.

    Args:
        puzzles: train puzzles (tuples of 4 ints).
        rollout_paths: extra ``(numbers, steps)`` pairs, e.g. the generator's samples or
            search traces, labelled the same way.
        per_puzzle: synthetic paths per puzzle, split as 12 walks : 4 solutions : 8 near
            misses (the shipped verifier's mix at 24).
    Raises:
        AssertionError: if a test puzzle is among the inputs.
    """
    share = per_puzzle / 24
    mix = {"num_walks": round(12 * share), "num_solutions": round(4 * share), "num_corrupt": round(8 * share)}
    out, seen = [], set()
    pairs = list(rollout_paths)
    for numbers in puzzles:
        pairs += [(tuple(numbers), p) for p in synthetic_paths(numbers, rng, **mix)]
    for numbers, steps in pairs:
        key = (tuple(numbers), tuple(steps))
        if steps and key not in seen:
            seen.add(key)
            out.append((tuple(numbers), list(steps), exact_step_labels(numbers, list(steps))))
    return out
