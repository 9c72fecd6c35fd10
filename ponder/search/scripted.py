"""A scripted fake generator and verifier, for testing and benchmarking search without a model.

A ``ScriptedProblem`` fixes what solutions look like: ``num_steps`` steps, the
last an ``Answer: ...`` line. A path is *on track* while every step is the
correct branch; each step the fake generator samples the correct branch with
probability ``p_correct`` and otherwise one of ``num_wrong`` wrong branches, and
a path that left the track never returns to it. The fake verifier scores a step
``good_score`` if the path is still on track after it, ``bad_score`` if not,
plus seeded noise, so search has something real to find and something to get
wrong. Both are pure functions of (their seed, the request seed, the text): the
same requests give the same results in any order or batching.

Token counts are exact under one convention: a character is a token. A generate
request computes its prefix once and shares it between its ``n`` samples
(``num_prompt_tokens = n * len(prefix)``, ``num_cached = (n - 1) * len(prefix)``);
a one-step sample also generates the delimiter it stops at. A score request
shares its problem prompt between paths.

``ScriptedGenerator(instant_steps=k)`` ignores problems and emits generic steps
without any randomness, for engine-overhead benchmarks.

``run_inprocess`` and ``run_scheduled`` drive strategies to completion in this
process: the first with no budget (every request answered at once), the second
through a ``Scheduler``.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from typing import Sequence

from ponder.search.flops import ModelSpec
from ponder.search.messages import (GenerateRequest, GenerateResult, Request, Result, ScoreRequest,
                                    ScoreResult)
from ponder.search.strategies.base import Answer, Strategy

ANSWER_PREFIX = "Answer:"
INSTANT_STEP = "instant step "  # how instant-mode steps start; counting them gives the depth


@dataclass(frozen=True)
class ScriptedProblem:
    """One scripted problem: its prompt, its correct track and how easy the track is to stay on.

    Difficulty is ``p_correct`` (chance per step of the correct branch) and how sure
    the verifier is (``good_score`` vs ``bad_score``); ``p_correct = 0`` is a problem
    no sample can solve.
    """

    prompt: str
    answer: str = "42"
    num_steps: int = 3  # steps per solution, the answer line included
    p_correct: float = 0.5  # chance that a step on the track takes the correct branch
    num_wrong: int = 3  # wrong branches at each step
    wrong_answers: tuple[str, ...] = ("7", "13", "99")  # what off-track paths conclude
    good_score: float = 0.9  # verifier score of a step that keeps the path on track
    bad_score: float = 0.1  # verifier score of a step on a path off track

    def correct_step(self, depth: int) -> str:
        """The on-track step at ``depth`` (1-based)."""
        if depth >= self.num_steps:
            return f"{ANSWER_PREFIX} {self.answer}"
        return f"step {depth}: right"

    def wrong_step(self, depth: int, branch: int) -> str:
        """Wrong branch ``branch`` at ``depth``."""
        if depth >= self.num_steps:
            return f"{ANSWER_PREFIX} {self.wrong_answers[branch % len(self.wrong_answers)]}"
        return f"step {depth}: wrong {branch}"

    def on_track(self, steps: Sequence[str]) -> bool:
        return all(step == self.correct_step(i + 1) for i, step in enumerate(steps))


@dataclass
class ScriptedTask:
    """The SearchTask of scripted problems: a step per line, ending with an ``Answer:`` line."""

    step_delimiter: str = "\n"
    max_steps: int = 8

    def is_terminal(self, step: str) -> bool:
        return step.startswith(ANSWER_PREFIX)

    def extract_answer(self, steps: list[str]) -> str | None:
        if steps and self.is_terminal(steps[-1]):
            return steps[-1][len(ANSWER_PREFIX):].strip()
        return None


def _stable_rng(*parts: object) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: stable across runs and processes.
    return random.Random("|".join(map(str, parts)))


class _ScriptedBackend:
    """Finds the scripted problem a text belongs to and splits off its steps."""

    def __init__(self, problems: Sequence[ScriptedProblem], delimiter: str):
        self.problems = list(problems)
        self.delimiter = delimiter
        prompts = [p.prompt for p in self.problems]
        if len(set(prompts)) != len(prompts):
            raise ValueError("scripted problems need distinct prompts")

    def locate(self, prefix: str) -> tuple[ScriptedProblem, list[str]]:
        for problem in self.problems:
            if prefix.startswith(problem.prompt):
                steps = prefix[len(problem.prompt):].split(self.delimiter)
                return problem, steps[:-1] if steps and steps[-1] == "" else steps
        raise ValueError(f"text {prefix[:60]!r} starts with none of the "
                         f"{len(self.problems)} scripted problems' prompts")


class ScriptedGenerator(_ScriptedBackend):
    """A fake GeneratorBackend that samples the steps of scripted problems (see module docstring).

    Args:
        problems: the problems whose prompts requests start with.
        seed: mixed into every request's sampling.
        delimiter: the step delimiter (the task's).
        instant_steps: if set, ignore ``problems`` and emit generic steps, the
            ``instant_steps``-th an answer line, with no randomness (benchmarks).

    Counters ``num_calls``, ``num_requests``, ``num_texts``, ``num_generated_tokens``
    record everything it was asked for.
    """

    def __init__(self, problems: Sequence[ScriptedProblem] = (), seed: int = 0,
                 delimiter: str = "\n", instant_steps: int | None = None):
        super().__init__(problems, delimiter)
        self.seed = seed
        self.instant_steps = instant_steps
        self.num_calls = 0
        self.num_requests = 0
        self.num_texts = 0
        self.num_generated_tokens = 0

    def model_spec(self) -> ModelSpec:
        return ModelSpec(name="scripted-generator", num_params=1000, num_layers=2, d_model=16)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One result per request, in request order."""
        self.num_calls += 1
        results = [self._generate_one(r) for r in requests]
        self.num_requests += len(requests)
        self.num_texts += sum(len(r.texts) for r in results)
        self.num_generated_tokens += sum(r.num_generated_tokens for r in results)
        return results

    def _generate_one(self, request: GenerateRequest) -> GenerateResult:
        one_step = self.delimiter in request.stop
        # Seeding with a str hashes it (SHA-512): skipped in instant mode, which draws nothing.
        instant = self.instant_steps is not None
        rng = None if instant else _stable_rng(self.seed, request.seed, request.prefix)
        texts, logprobs, reasons, generated = [], [], [], 0
        for i in range(request.n):
            steps, logprob = self._sample(request, rng, i, one_step)
            full = self.delimiter.join(steps) + (self.delimiter if one_step else "")
            text = full[: request.max_new_tokens]
            stopped = len(full) <= request.max_new_tokens
            generated += len(text)
            if stopped and one_step:
                text = text[: -len(self.delimiter)]  # the matched stop string is not returned
            texts.append(text)
            logprobs.append(logprob)
            reasons.append("stop" if stopped else "length")
        prompt = len(request.prefix)
        return GenerateResult(
            request_id=request.request_id, texts=texts, token_ids=[[ord(c) for c in t] for t in texts],
            cumulative_logprobs=logprobs, num_prompt_tokens=request.n * prompt,
            num_cached_prompt_tokens=(request.n - 1) * prompt, num_generated_tokens=generated,
            finish_reasons=reasons)

    def _sample(self, request: GenerateRequest, rng: random.Random | None, index: int,
                one_step: bool) -> tuple[list[str], float]:
        """The steps of sample ``index`` (one, or through the answer line) and their logprob."""
        if self.instant_steps is not None:
            first = request.prefix.count(INSTANT_STEP) + 1  # steps so far, whatever the prompt holds
            last = first if one_step else max(first, self.instant_steps)
            index += request.seed or 0  # samples of different requests differ too
            return [self._instant_step(d, index % 1000) for d in range(first, last + 1)], -1.0
        problem, steps = self.locate(request.prefix)
        on_track = problem.on_track(steps)
        out, logprob = [], 0.0
        while True:
            depth = len(steps) + len(out) + 1
            step, p = self._branch(problem, depth, on_track, rng, request.temperature == 0)
            out.append(step)
            logprob += math.log(p)
            on_track = on_track and step == problem.correct_step(depth)
            if one_step or depth >= problem.num_steps:
                return out, logprob

    def _instant_step(self, depth: int, index: int) -> str:
        if depth >= self.instant_steps:
            return f"{ANSWER_PREFIX} {index}"
        return f"{INSTANT_STEP}{depth}.{index}"

    @staticmethod
    def _branch(problem: ScriptedProblem, depth: int, on_track: bool, rng: random.Random,
                greedy: bool) -> tuple[str, float]:
        wrong_p = (1.0 - problem.p_correct if on_track else 1.0) / problem.num_wrong
        if on_track and (problem.p_correct >= wrong_p if greedy else rng.random() < problem.p_correct):
            return problem.correct_step(depth), problem.p_correct
        branch = 0 if greedy else rng.randrange(problem.num_wrong)
        return problem.wrong_step(depth, branch), wrong_p


class ScriptedVerifier(_ScriptedBackend):
    """A fake VerifierBackend: high scores on the correct track, low off it, plus seeded noise.

    Args:
        problems: the problems whose prompts requests name.
        seed: mixed into the noise.
        noise: each score moves by a uniform draw in ``[-noise, noise]`` (then clipped
            to [0, 1]); the draw depends only on the path up to that step.
        delimiter: the step delimiter.
        instant: if True, ignore ``problems`` and score by a cheap hash of the step.
    """

    def __init__(self, problems: Sequence[ScriptedProblem] = (), seed: int = 0, noise: float = 0.05,
                 delimiter: str = "\n", instant: bool = False):
        super().__init__(problems, delimiter)
        self.seed = seed
        self.noise = noise
        self.instant = instant
        self.num_calls = 0
        self.num_requests = 0
        self.num_paths = 0

    def model_spec(self) -> ModelSpec:
        return ModelSpec(name="scripted-verifier", num_params=500, num_layers=2, d_model=8)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """One result per request, in request order."""
        self.num_calls += 1
        self.num_requests += len(requests)
        self.num_paths += sum(len(r.paths) for r in requests)
        return [self._score_one(r) for r in requests]

    def _score_one(self, request: ScoreRequest) -> ScoreResult:
        scores = [self._path_scores(request.prompt, path) for path in request.paths]
        # The verifier reads "prompt\nstep\nstep...", sharing the prompt between paths.
        num_prompt = sum(len(request.prompt) + sum(len(s) + 1 for s in path) for path in request.paths)
        num_cached = max(len(request.paths) - 1, 0) * len(request.prompt)
        return ScoreResult(request_id=request.request_id, step_scores=scores,
                           num_prompt_tokens=num_prompt, num_cached_prompt_tokens=num_cached)

    def _path_scores(self, prompt: str, path: list[str]) -> list[float]:
        if self.instant:
            return [zlib.crc32(step.encode()) % 1000 / 1000 for step in path]
        problem, _ = self.locate(prompt)
        out, on_track = [], True
        for depth, step in enumerate(path, start=1):
            on_track = on_track and step == problem.correct_step(depth)
            base = problem.good_score if on_track else problem.bad_score
            noise = _stable_rng(self.seed, prompt, *path[:depth]).uniform(-self.noise, self.noise)
            out.append(min(1.0, max(0.0, base + noise)))
        return out


# -- in-process drivers ----------------------------------------------------------------

def run_inprocess(strategies: Sequence[Strategy], generator: ScriptedGenerator,
                  verifier: ScriptedVerifier, shuffle_seed: int | None = None,
                  max_rounds: int = 100_000) -> list[Answer]:
    """Drive ``strategies`` to completion with no scheduler and no budget.

    Each round sends every request the strategies want now, in one generate and one
    score call, and feeds all results back, in a seeded random order if
    ``shuffle_seed`` is set (strategies must not care).

    Returns:
        Each strategy's final Answer, in order.

    Raises:
        RuntimeError: if a round has no request while a strategy is unfinished (a
            strategy waiting for nothing), or after ``max_rounds`` rounds.
    """
    rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
    for _ in range(max_rounds):
        batch = [(s, r) for s in strategies if not s.done for r in s.requests()]
        if not batch:
            stuck = [s.problem_id for s in strategies if not s.done]
            if stuck:
                raise RuntimeError(f"strategies of {stuck} wait with nothing in flight")
            return [s.answer() for s in strategies]
        gen = [(s, r) for s, r in batch if isinstance(r, GenerateRequest)]
        score = [(s, r) for s, r in batch if isinstance(r, ScoreRequest)]
        results: list[Result] = []
        results += generator.generate([r for _, r in gen]) if gen else []
        results += verifier.score([r for _, r in score]) if score else []
        delivered: list[tuple[Strategy, Request, Result]] = [
            (s, r, res) for (s, r), res in zip(gen + score, results)]
        if rng is not None:
            rng.shuffle(delivered)
        for strategy, request, result in delivered:
            if not strategy.done:
                strategy.on_result(request, result)
    raise RuntimeError(f"strategies did not finish in {max_rounds} rounds")


def run_scheduled(scheduler, generator: ScriptedGenerator, verifier: ScriptedVerifier,
                  max_steps: int = 100_000) -> list[Answer]:
    """Run a ``ponder.search.scheduler.Scheduler`` to completion on the scripted backends.

    The engine loop without Ray: ``schedule()``, answer every batch at once, ``update()``.

    Returns:
        Every Answer popped, in the order problems finished.

    Raises:
        RuntimeError: if the scheduler still has work after ``max_steps`` steps.
    """
    answers: list[Answer] = []
    for _ in range(max_steps):
        if not scheduler.has_work:
            return answers
        plan = scheduler.schedule()
        results: list[Result] = []
        for batch in plan.generate_batches:
            results += generator.generate(batch)
        for batch in plan.score_batches:
            results += verifier.score(batch)
        scheduler.update(results)
        answers += scheduler.pop_finished()
    raise RuntimeError(f"the scheduler still had work after {max_steps} steps")
