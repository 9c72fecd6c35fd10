"""The generator's own rollouts on train puzzles: the verifier's training data.

Each rollout is one whole sampled solution (decoded to the end-of-sequence
token, not step by step, so a puzzle's samples share one prompt prefill), cut
at its first ``Answer:`` line and labelled by the task's exact checker.

Some rollouts start after one or two random valid steps instead of at the
prompt. A generator trained on solutions rarely walks into a dead end on its
own train puzzles, but search on new puzzles does all the time; these rollouts
show the verifier such states and how the generator fares from them.

Others start with a near-miss mistake (``ponder.models.corrupt``) put into a
solution or a random walk: the wrong arithmetic and bookkeeping search meets on
new puzzles. The generator carries on from the mistake and the path is labelled
by its final answer like every other rollout; a corrupted ``Answer:`` line is
final already and is labelled as it stands.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from ponder.models.corrupt import corrupt_step
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
                     temperature: float = 1.0, seed: int = 0, num_random_prefixes: int = 0,
                     prefix_rollouts: int = 2, num_corrupt: int = 0, puzzles_per_call: int = 32,
                     log_every_s: float = 30.0) -> list[Rollout]:
    """Sampled solutions of every puzzle, each labelled right or wrong.

    Args:
        num_rollouts: solutions sampled from each puzzle's prompt.
        num_random_prefixes: random valid 1- or 2-step starts per puzzle ...
        prefix_rollouts: ... each continued this many times by the generator.
        num_corrupt: paths per puzzle with one near-miss mistake, each continued once.

    Raises:
        AssertionError: if a test puzzle (900-999) is among ``puzzles``.
    """
    sampler = BatchGenerator(model, tokenizer, max_cache_tokens=0)
    rng = random.Random(seed)
    rollouts: list[Rollout] = []
    last_log = start = time.time()
    for first in range(0, len(puzzles), puzzles_per_call):
        starts = []  # (numbers, forced steps, samples)
        for numbers in puzzles[first:first + puzzles_per_call]:
            assert_not_test(numbers)
            starts.append((tuple(numbers), [], num_rollouts))
            for _ in range(num_random_prefixes):
                forced = game24.random_valid_steps(numbers, rng, rng.choice((1, 2)))
                starts.append((tuple(numbers), forced, prefix_rollouts))
            for _ in range(num_corrupt):
                forced = corrupted_start(numbers, rng)
                if forced and game24.is_terminal(forced[-1]):  # nothing to continue: label it now
                    rollouts.append(Rollout(tuple(numbers), forced, is_correct(numbers, forced)))
                elif forced:
                    starts.append((tuple(numbers), forced, 1))
        requests = [GenerateRequest(
            request_id=i, prefix=prompt_for(numbers) + "".join(f + "\n" for f in forced), n=n,
            max_new_tokens=model.config.block_size, stop=(), temperature=temperature,
            seed=rng.getrandbits(62)) for i, (numbers, forced, n) in enumerate(starts) if n > 0]
        live = [start for start in starts if start[2] > 0]
        for (numbers, forced, _), result in zip(live, sampler.generate(requests)):
            for text in result.texts:
                steps = forced + split_steps(text)
                rollouts.append(Rollout(numbers, steps, is_correct(numbers, steps)))
        if time.time() - last_log > log_every_s:
            last_log = time.time()
            done = min(len(puzzles), first + puzzles_per_call)
            print(f"[rollouts] {done}/{len(puzzles)} puzzles, {last_log - start:.0f}s", flush=True)
    return rollouts


def collect_step_samples(model: GPT, tokenizer: CharTokenizer, puzzles, num_samples: int = 4,
                         temperature: float = 1.0, seed: int = 0, puzzles_per_call: int = 64,
                         log_every_s: float = 30.0) -> list[tuple[tuple[int, ...], list[str]]]:
    """The generator's next steps from states search visits: what the verifier must rank.

    From each train puzzle's prompt, from a random valid 1-step and 2-step start, and from
    a solution's first 3 steps (where the answer line comes next), ``num_samples`` single
    steps are sampled as search samples them (cut at the step delimiter). Returns
    ``(numbers, start steps + sampled step)`` pairs, unlabelled (``exact_labels`` labels them).
    Cheaper than whole rollouts: a step is a quarter of a solution's tokens.

    Raises:
        AssertionError: if a test puzzle (900-999) is among ``puzzles``.
    """
    sampler = BatchGenerator(model, tokenizer, max_cache_tokens=0)
    rng = random.Random(seed)
    out: list[tuple[tuple[int, ...], list[str]]] = []
    last_log = start = time.time()
    for first in range(0, len(puzzles), puzzles_per_call):
        starts = []  # (numbers, forced steps)
        for numbers in puzzles[first:first + puzzles_per_call]:
            assert_not_test(numbers)
            numbers = tuple(numbers)
            starts.append((numbers, []))
            starts += [(numbers, game24.random_valid_steps(numbers, rng, k)) for k in (1, 2)]
            sols = game24.solutions(numbers)
            if sols:
                starts.append((numbers, list(rng.choice(sols)[:3])))
        requests = [GenerateRequest(
            request_id=i, prefix=prompt_for(numbers) + "".join(f + "\n" for f in forced), n=num_samples,
            max_new_tokens=48, stop=("\n",), temperature=temperature, seed=rng.getrandbits(62))
            for i, (numbers, forced) in enumerate(starts)]
        for (numbers, forced), result in zip(starts, sampler.generate(requests)):
            out += [(numbers, forced + [text]) for text in result.texts if text.strip()]
        if time.time() - last_log > log_every_s:
            last_log = time.time()
            done = min(len(puzzles), first + puzzles_per_call)
            print(f"[step samples] {done}/{len(puzzles)} puzzles, {last_log - start:.0f}s", flush=True)
    return out


def corrupted_start(numbers, rng: random.Random) -> list[str] | None:
    """A solution's or a random walk's first steps, the last of them made wrong; None if none."""
    if rng.random() < 0.5:
        steps = rng.choice(game24.solutions(numbers) or [[]])
    else:
        steps = game24.random_trace(numbers, rng)[0]
    if not steps:
        return None
    j = rng.randrange(len(steps))
    bad = corrupt_step(steps[j], rng)
    return None if bad is None or bad == steps[j] else steps[:j] + [bad]


def save_rollouts(rollouts: list[Rollout], path: str | Path) -> None:
    """Write rollouts as JSONL (numbers, steps, correct), one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rollouts:
            f.write(json.dumps({"numbers": list(r.numbers), "steps": r.steps, "correct": r.correct}) + "\n")


def load_rollouts(path: str | Path) -> list[Rollout]:
    """Read what ``save_rollouts`` wrote; test puzzles are refused like everywhere else."""
    rollouts = []
    with Path(path).open() as f:
        for line in f:
            row = json.loads(line)
            numbers = tuple(row["numbers"])
            assert_not_test(numbers)
            rollouts.append(Rollout(numbers, list(row["steps"]), bool(row["correct"])))
    return rollouts
