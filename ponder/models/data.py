"""Training data for the embedded models, built from Game-of-24 train puzzles only.

Generator data: every step-by-step solution of every train puzzle, in the ToT
format (``ponder.tasks.game24.solutions``). Verifier data: the trained
generator's own rollouts on train puzzles, right and wrong, where a step's
target is the fraction of rollouts through that step that reached a right answer.

The test split (puzzles 900-999 of 24.csv) is excluded by ``assert_not_test``,
called on every puzzle a builder touches; tests/test_train.py checks it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ponder.models.tokenizer import EOS_ID, PAD_ID, CharTokenizer
from ponder.tasks import game24

IGNORE = -100  # target index that cross_entropy skips


def assert_not_test(numbers) -> None:
    """Fail loudly if a test puzzle (900-999) is about to enter training data."""
    assert not game24.is_test_puzzle(numbers), f"test puzzle {numbers} must never be training data"


def prompt_for(numbers) -> str:
    """The prompt a path starts with, ``"Input: 4 5 6 10\\n"``."""
    return f"Input: {' '.join(str(x) for x in numbers)}\n"


def solution_text(steps: list[str]) -> str:
    return "".join(step + "\n" for step in steps)


def generator_texts(puzzles) -> list[tuple[str, list[str]]]:
    """Per train puzzle: its prompt and the texts of all its solutions.

    Raises:
        AssertionError: if a test puzzle is among ``puzzles``.
    """
    out = []
    for numbers in puzzles:
        assert_not_test(numbers)
        sols = game24.solutions(numbers)
        if sols:
            out.append((prompt_for(numbers), [solution_text(s) for s in sols]))
    return out


def result_mask(steps: list[str]) -> list[bool]:
    """Per character of ``solution_text(steps)``: True where a step states its result.

    That is everything after a step's ``=`` (the value, the ``left:`` list, the
    delimiter): text fully determined by the operation the step chose.
    """
    mask = []
    for step in steps:
        cut = step.find("=") + 1
        mask += [False] * cut + [True] * (len(step) - cut) + [True]
    return mask


@dataclass
class GeneratorBatcher:
    """Samples LM batches from solutions and, for arithmetic, from random valid walks.

    A solution row is a random train puzzle, then one of its solutions at random:
    sampling the puzzle first keeps puzzles with hundreds of solutions from
    drowning those with one. The loss skips the prompt.

    A walk row (a ``random_fraction`` of rows) is a random walk of valid steps
    on a train puzzle, usually not reaching 24. Its loss covers only each step's
    result (after the ``=``): the model learns to compute and book-keep any
    operation honestly, while which operation to choose is still learned from
    solutions only. Trained on solutions alone, the model learns that every
    step ends in 24 and fudges arithmetic to get there.
    """

    examples: list[tuple[str, list[str]]]
    tokenizer: CharTokenizer
    random_fraction: float = 0.0

    def _row(self, rng: random.Random) -> tuple[list[int], list[bool]]:
        """Token ids of one sequence and, per id, whether it is a target."""
        prompt, texts = rng.choice(self.examples)
        if rng.random() < self.random_fraction:
            numbers = [int(t) for t in prompt.split()[1:]]
            steps, reached = game24.random_trace(numbers, rng)
            if not reached:
                text = solution_text(steps)
                ids = self.tokenizer.encode(prompt + text, bos=True)
                return ids, [False] * (1 + len(prompt)) + result_mask(steps)
        ids = self.tokenizer.encode(prompt + rng.choice(texts), bos=True) + [EOS_ID]
        return ids, [False] * (1 + len(prompt)) + [True] * (len(ids) - 1 - len(prompt))

    def batch(self, rng: random.Random, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): (B, T) inputs and (B, T) next-token targets, IGNORE where not trained."""
        rows = [self._row(rng) for _ in range(batch_size)]
        T = max(len(ids) for ids, _ in rows) - 1
        x = torch.full((batch_size, T), PAD_ID, dtype=torch.long)
        y = torch.full((batch_size, T), IGNORE, dtype=torch.long)
        for i, (ids, trained) in enumerate(rows):
            ids_t = torch.tensor(ids)
            x[i, :len(ids) - 1] = ids_t[:-1]
            y[i, :len(ids) - 1] = torch.where(torch.tensor(trained[1:]), ids_t[1:], IGNORE)
        return x, y


@dataclass(slots=True)
class Rollout:
    """One sampled path on a train puzzle and whether its final answer was right."""

    numbers: tuple[int, ...]
    steps: list[str]
    correct: bool


def step_targets(rollouts: list[Rollout]) -> list[tuple[tuple[int, ...], list[str], list[float]]]:
    """Unique paths with a soft target per step: the success rate of all rollouts through it.

    Rollouts sharing the first j steps of a puzzle are Monte Carlo samples of the
    value of that prefix under the generator, so their mean outcome is the target.

    Raises:
        AssertionError: if a rollout is on a test puzzle.
    """
    wins: dict[tuple, list[int]] = {}  # (numbers, steps[:j+1]) -> [num_correct, num_total]
    for r in rollouts:
        assert_not_test(r.numbers)
        for j in range(len(r.steps)):
            stat = wins.setdefault((r.numbers, tuple(r.steps[:j + 1])), [0, 0])
            stat[0] += int(r.correct)
            stat[1] += 1
    paths, seen = [], set()
    for r in rollouts:
        key = (r.numbers, tuple(r.steps))
        if key in seen or not r.steps:
            continue
        seen.add(key)
        targets = [wins[(r.numbers, tuple(r.steps[:j + 1]))] for j in range(len(r.steps))]
        paths.append((r.numbers, list(r.steps), [w / n for w, n in targets]))
    return paths


@dataclass
class VerifierBatcher:
    """Batches for the process reward model: a target at each step's closing delimiter."""

    paths: list[tuple[tuple[int, ...], list[str], list[float]]]
    tokenizer: CharTokenizer
    block_size: int

    def __post_init__(self):
        self.encoded = []  # per path: (token ids, delimiter positions, targets)
        for numbers, steps, targets in self.paths:
            prompt = prompt_for(numbers)
            ids = self.tokenizer.encode(prompt, bos=True)
            ends = []
            for step in steps:
                ids += self.tokenizer.encode(step + "\n")
                ends.append(len(ids) - 1)
            if len(ids) <= self.block_size:
                self.encoded.append((ids, ends, targets))

    def batch(self, rng: random.Random, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, mask, target): (B, T) ids, (B, T) bool where a step ends, (B, T) float targets."""
        rows = [rng.choice(self.encoded) for _ in range(batch_size)]
        T = max(len(ids) for ids, _, _ in rows)
        x = torch.full((batch_size, T), PAD_ID, dtype=torch.long)
        mask = torch.zeros((batch_size, T), dtype=torch.bool)
        target = torch.zeros((batch_size, T))
        for i, (ids, ends, targets) in enumerate(rows):
            x[i, :len(ids)] = torch.tensor(ids)
            mask[i, ends] = True
            target[i, ends] = torch.tensor(targets)
        return x, mask, target
