"""The generator's own rollouts on train puzzles: the verifier's training data.

Each rollout is one whole sampled solution (decoded to the end-of-sequence
token, not step by step, so a puzzle's samples share one prompt prefill), cut
at its first ``Answer:`` line and labelled by the task's exact checker.
"""

from __future__ import annotations

import time

from ponder.models.data import Rollout, assert_not_test, prompt_for
from ponder.models.generation import BatchGenerator
from ponder.models.gpt import GPT
from ponder.models.tokenizer import CharTokenizer
from ponder.search.messages import GenerateRequest
from ponder.tasks import game24


def split_steps(text: str) -> list[str]:
    """The steps of a generated solution, up to and including its first answer line."""
    steps = []
    for line in text.split("\n"):
        if not line:
            continue
        steps.append(line)
        if line.startswith("Answer:"):
            break
    return steps


def is_correct(numbers, steps: list[str]) -> bool:
    """True if the path's final answer is a right solution of the puzzle ``numbers``."""
    answer = game24.extract_answer(steps)
    return bool(answer is not None and game24.verify(numbers, answer))


def collect_rollouts(model: GPT, tokenizer: CharTokenizer, puzzles, num_rollouts: int,
                     temperature: float = 1.0, seed: int = 0, puzzles_per_call: int = 32,
                     log_every_s: float = 30.0) -> list[Rollout]:
    """``num_rollouts`` sampled solutions of every puzzle, each labelled right or wrong.

    Raises:
        AssertionError: if a test puzzle (900-999) is among ``puzzles``.
    """
    sampler = BatchGenerator(model, tokenizer, max_cache_tokens=0)
    rollouts: list[Rollout] = []
    last_log = start = time.time()
    for first in range(0, len(puzzles), puzzles_per_call):
        chunk = puzzles[first:first + puzzles_per_call]
        requests = []
        for j, numbers in enumerate(chunk):
            assert_not_test(numbers)
            requests.append(GenerateRequest(
                request_id=first + j, prefix=prompt_for(numbers), n=num_rollouts,
                max_new_tokens=model.config.block_size, stop=(), temperature=temperature,
                seed=seed * 1_000_003 + first + j))
        for numbers, result in zip(chunk, sampler.generate(requests)):
            for text in result.texts:
                steps = split_steps(text)
                rollouts.append(Rollout(tuple(numbers), steps, is_correct(numbers, steps)))
        if time.time() - last_log > log_every_s:
            last_log = time.time()
            done = first + len(chunk)
            print(f"[rollouts] {done}/{len(puzzles)} puzzles, {last_log - start:.0f}s", flush=True)
    return rollouts
