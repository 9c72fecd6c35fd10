"""Many trees at once: collect requests, reserve their FLOPs, batch them, route results back.

No Ray here: the engine loop in ``ponder.cluster`` runs

    plan = scheduler.schedule()      # reserve + batch what strategies want now
    ... dispatch plan's batches to actors, wait for some results ...
    scheduler.update(results)        # settle + deliver, any subset, any order
    answers = scheduler.pop_finished()

Only strategies that may have something new to say are asked for requests: those
just added, those that just got a result (a ready queue) and the rare idle ones
(nothing in flight, nothing asked, not done). So a step costs O(requests and
results), not O(trees).

A request that does not fit the budget is held and retried on the next
``schedule()`` while its problem still has requests in flight (their unused
reservations may free room); a problem that cannot fit its next request with
nothing in flight is stopped with reason ``"budget"``, so nothing waits forever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, replace

from ponder.search.budget import BudgetManager, Reservation
from ponder.search.flops import (ModelSpec, StepCosts, TokenBound, actual_flops, default_token_bound,
                                 flops, generate_tokens, worst_case_tokens)
from ponder.search.messages import (GenerateRequest, GenerateResult, Request, Result, ScoreRequest,
                                    ScoreResult)
from ponder.search.step_check import StepCheck, checked_scores
from ponder.search.strategies.base import Answer, Strategy


@dataclass(slots=True)
class Plan:
    """What to dispatch now: batches of requests, each batch one actor call.

    ``generate_tokens[i]`` is the worst-case tokens of ``generate_batches[i]`` (likewise for
    scores), so a pool may merge batches that wait without passing the batch limits.
    """

    generate_batches: list[list[GenerateRequest]] = field(default_factory=list)
    score_batches: list[list[ScoreRequest]] = field(default_factory=list)
    generate_tokens: list[int] = field(default_factory=list)
    score_tokens: list[int] = field(default_factory=list)

    @property
    def num_requests(self) -> int:
        """Requests in all batches."""
        return sum(map(len, self.generate_batches)) + sum(map(len, self.score_batches))

    @property
    def is_empty(self) -> bool:
        """True if there is nothing to dispatch."""
        return not (self.generate_batches or self.score_batches)


@dataclass(slots=True)
class ProblemStats:
    """Per-problem counters for results.jsonl; FLOPs are the settled (actual) ones."""

    generator_flops: int = 0
    verifier_flops: int = 0
    num_generate_requests: int = 0
    num_score_requests: int = 0
    num_samples: int = 0  # generated texts asked for (after any budget shrink)
    num_scored_paths: int = 0
    generator_prompt_tokens: int = 0
    generator_cached_tokens: int = 0
    generator_generated_tokens: int = 0
    verifier_prompt_tokens: int = 0
    verifier_cached_tokens: int = 0

    @property
    def flops(self) -> int:
        """FLOPs spent on the problem, both models."""
        return self.generator_flops + self.verifier_flops

    def add(self, request: Request, result: Result, actual: int) -> None:
        """Count one settled request that cost ``actual`` FLOPs."""
        if isinstance(result, GenerateResult):
            self.generator_flops += actual
            self.num_generate_requests += 1
            self.num_samples += request.n
            self.generator_prompt_tokens += result.num_prompt_tokens
            self.generator_cached_tokens += result.num_cached_prompt_tokens
            self.generator_generated_tokens += result.num_generated_tokens
        else:
            self.verifier_flops += actual
            self.num_score_requests += 1
            self.num_scored_paths += len(request.paths)
            self.verifier_prompt_tokens += result.num_prompt_tokens
            self.verifier_cached_tokens += result.num_cached_prompt_tokens

    def to_dict(self) -> dict[str, int]:
        """Plain counters for results.jsonl, ``flops`` (the total) first."""
        return {"flops": self.flops, **asdict(self)}


class _Problem:
    """The scheduler's bookkeeping for one active strategy."""

    __slots__ = ("problem_id", "strategy", "stats", "in_flight", "pending")

    def __init__(self, strategy: Strategy):
        self.problem_id = strategy.problem_id
        self.strategy = strategy
        self.stats = ProblemStats()
        self.in_flight: dict[int, None] = {}  # request_id -> None, this problem's unsettled requests
        self.pending: deque[Request] = deque()  # asked for but not yet reserved, in order


class _InFlight:
    __slots__ = ("problem", "request", "reservation")

    def __init__(self, problem: _Problem, request: Request, reservation: Reservation):
        self.problem = problem
        self.request = request
        self.reservation = reservation


class _Packer:
    """Next-fit packing into batches of at most ``max_requests`` and ``max_tokens``.

    A request larger than ``max_tokens`` on its own gets a batch of its own.
    """

    __slots__ = ("max_requests", "max_tokens", "batches", "tokens")

    def __init__(self, max_requests: int, max_tokens: int):
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.batches: list[list] = []
        self.tokens: list[int] = []  # worst-case tokens of each batch

    def add(self, request: Request, tokens: int) -> None:
        last = self.batches[-1] if self.batches else None
        if last is None or len(last) >= self.max_requests or self.tokens[-1] + tokens > self.max_tokens:
            self.batches.append([request])
            self.tokens.append(tokens)
        else:
            last.append(request)
            self.tokens[-1] += tokens


class Scheduler:
    """Grows many strategies' trees at once under one BudgetManager.

    Args:
        budget: the job's FLOP ledger; problems are registered on ``add`` if needed.
        generator_spec: the generator model, for FLOPs of GenerateRequests.
        verifier_spec: the verifier model, for FLOPs of ScoreRequests.
        max_batch_requests: at most this many requests per batch.
        max_batch_tokens: at most this many worst-case tokens per batch (a single
            larger request gets a batch of its own).
        token_bound: text -> upper bound on its token count (see ``flops.py``).
        step_check: ``(problem_id, steps) -> bool | None``, a task's exact step checker;
            if given, verifier scores from a rejected step on are 0 (``step_check.py``).

    Raises:
        ValueError: if a batch limit is < 1.
    """

    def __init__(self, budget: BudgetManager, generator_spec: ModelSpec, verifier_spec: ModelSpec,
                 max_batch_requests: int = 64, max_batch_tokens: int = 16384,
                 token_bound: TokenBound = default_token_bound, step_check: StepCheck | None = None):
        for name, value in (("max_batch_requests", max_batch_requests),
                            ("max_batch_tokens", max_batch_tokens)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.budget = budget
        self.costs = StepCosts(generator_spec, verifier_spec, token_bound)  # how requests are priced
        self.max_batch_requests, self.max_batch_tokens = max_batch_requests, max_batch_tokens
        self.step_check = step_check
        self._problems: dict[str, _Problem] = {}  # problem_id -> active problem
        self._in_flight: dict[int, _InFlight] = {}  # request_id -> reserved, unsettled request
        self._ready: dict[str, None] = {}  # problem_id -> None: ask for requests next schedule()
        self._held: dict[str, None] = {}  # problem_id -> None: has pending requests to retry
        self._idle: dict[str, None] = {}  # problem_id -> None: nothing in flight, nothing asked
        self._orphaned: set[int] = set()  # request ids released by cancel(); results ignored
        self._finished: list[Answer] = []
        self.errors: dict[str, str] = {}  # problem_id -> why it was stopped with an error
        self.totals = ProblemStats()  # every settled request of the job, summed (for metrics)
        self._packers = (_Packer(1, 1), _Packer(1, 1))  # (generate, score), replaced by each schedule()

    # -- lifecycle ------------------------------------------------------------

    def add(self, strategy: Strategy) -> None:
        """Start growing ``strategy``'s tree; it is asked for requests on the next ``schedule()``.

        Raises:
            ValueError: if a strategy for the same problem is still active.
        """
        problem_id = strategy.problem_id
        if problem_id in self._problems:
            raise ValueError(f"problem {problem_id!r} is already being searched")
        if problem_id not in self.budget:
            self.budget.add_problem(problem_id)
        self._problems[problem_id] = _Problem(strategy)
        self._ready[problem_id] = None

    def cancel(self, problem_id: str) -> bool:
        """Stop ``problem_id`` with reason ``"cancelled"`` and release all its reservations.

        Its in-flight requests' FLOPs are released, not charged: the engine should
        cancel those calls, and results that still arrive are dropped.

        Returns:
            True if the problem was active, False if unknown or already finished.
        """
        problem = self._problems.get(problem_id)
        if problem is None:
            return False
        for request_id in problem.in_flight:
            self.budget.release(self._in_flight.pop(request_id).reservation)
            self._orphaned.add(request_id)
        problem.in_flight.clear()
        problem.strategy.stop("cancelled")
        self._finish_if_done(problem)
        return True

    def requeue(self, request_ids: list[int]) -> None:
        """Put dispatched requests whose calls failed back in line (reservation released).

        Raises:
            KeyError: if a request id is not in flight.
        """
        for request_id in reversed(request_ids):
            entry = self._in_flight.pop(request_id)
            self.budget.release(entry.reservation)
            problem = entry.problem
            del problem.in_flight[request_id]
            problem.pending.appendleft(entry.request)
            self._held[problem.problem_id] = None
            self._idle.pop(problem.problem_id, None)

    def pop_finished(self) -> list[Answer]:
        """Answers of problems finished since the last call; ``extra["stats"]`` holds ProblemStats."""
        finished, self._finished = self._finished, []
        return finished

    def stats(self, problem_id: str) -> ProblemStats:
        """Counters of an active problem (finished ones carry theirs in their Answer)."""
        return self._problems[problem_id].stats

    @property
    def num_active(self) -> int:
        """Problems whose Answer has not been produced yet."""
        return len(self._problems)

    @property
    def num_in_flight(self) -> int:
        """Requests reserved and not yet settled (planned or dispatched)."""
        return len(self._in_flight)

    @property
    def has_work(self) -> bool:
        """True while any problem is active or any Answer waits to be popped."""
        return bool(self._problems or self._finished)

    # -- schedule -------------------------------------------------------------

    def schedule(self) -> Plan:
        """Collect requests, reserve their worst-case FLOPs and pack them into batches.

        Held requests go first, then those of strategies that got results, then idle
        ones. Afterwards some request is in flight or no problem is active, so an
        engine loop never spins on nothing.

        Returns:
            The batches to dispatch; every request in it holds a reservation.
        """
        generate = _Packer(self.max_batch_requests, self.max_batch_tokens)
        score = _Packer(self.max_batch_requests, self.max_batch_tokens)
        self._packers = (generate, score)
        for problem_id in list(self._held):
            self._place_pending(self._problems[problem_id])
        ready, self._ready = self._ready, {}
        for problem_id in (*ready, *self._idle):
            problem = self._problems.get(problem_id)
            if problem is not None:
                self._poll(problem)
        if not self._in_flight:
            # Nothing can change an idle strategy's mind any more: end it, don't spin.
            for problem_id in list(self._idle):
                problem = self._problems[problem_id]
                problem.strategy.stop("stalled")
                self._finish_if_done(problem)
        return Plan(generate.batches, score.batches, generate.tokens, score.tokens)

    def _poll(self, problem: _Problem) -> None:
        strategy, problem_id = problem.strategy, problem.problem_id
        requests = [] if strategy.done else strategy.requests()
        if strategy.done:  # requests of a finished strategy are dropped
            self._finish_if_done(problem)
            return
        problem.pending.extend(requests)
        self._place_pending(problem)
        if problem_id not in self._problems:
            return
        if problem.in_flight or problem.pending:
            self._idle.pop(problem_id, None)
        else:
            self._idle[problem_id] = None

    def _place_pending(self, problem: _Problem) -> None:
        problem_id = problem.problem_id
        pending = problem.pending
        if problem.strategy.done:  # stopped from outside while its requests waited
            pending.clear()
            self._held.pop(problem_id, None)
            self._finish_if_done(problem)
            return
        while pending:
            if not self._place(problem, pending[0]):
                break
            pending.popleft()
        if not pending:
            self._held.pop(problem_id, None)
        elif problem.in_flight or self._could_fit_later(problem, pending[0]):
            self._held[problem_id] = None
        else:
            problem.strategy.stop("budget")
            self._finish_if_done(problem)

    def _cost(self, request: Request) -> tuple[int, int, ModelSpec, str]:
        """(worst-case tokens, worst-case FLOPs, spec, model name) of ``request``."""
        if isinstance(request, GenerateRequest):
            spec = self.costs.generator
            tokens, context = worst_case_tokens(request, self.costs.token_bound, spec.prompt_once)
            return tokens, flops(spec, tokens, context), spec, "generator"
        tokens, context = worst_case_tokens(request, self.costs.token_bound)
        return tokens, flops(self.costs.verifier, tokens, context), self.costs.verifier, "verifier"

    def _place(self, problem: _Problem, request: Request) -> bool:
        """Reserve and pack ``request``, shrinking a generate request's ``n`` to fit; False if it can't."""
        if request.request_id in self._in_flight:
            raise ValueError(f"request id {request.request_id} of problem "
                             f"{problem.problem_id!r} is already in flight")
        problem_id = problem.problem_id
        tokens, cost, _, model = self._cost(request)
        headroom = self.budget.remaining(problem_id)
        if model == "generator" and request.n > 1 and headroom is not None:
            # Cost is affine in n (a prompt computed once, if the backend does, plus the
            # same per sample): take the largest n whose generation and the scoring of
            # its samples fit (unscored samples are wasted).
            prompt_tokens, sample_tokens, context = generate_tokens(
                request, self.costs.token_bound, self.costs.generator.prompt_once)
            fixed = flops(self.costs.generator, prompt_tokens, context)
            per_sample = flops(self.costs.generator, sample_tokens, context)
            follow_up = self._score_cost_per_sample(context)
            if per_sample and cost + follow_up * request.n > headroom:
                n = min(request.n, (headroom - fixed) // (per_sample + follow_up))
                if n < 1:  # not even one sample's worst case: count on both settling lower
                    n = min(request.n, (headroom - fixed) // per_sample)
                if n < 1:
                    return False
                request = replace(request, n=n)
                tokens, cost = prompt_tokens + sample_tokens * n, fixed + per_sample * n
        reservation = self.budget.reserve(problem_id, cost, model)
        if reservation is None:
            return False
        self._in_flight[request.request_id] = _InFlight(problem, request, reservation)
        problem.in_flight[request.request_id] = None
        self._packers[model == "verifier"].add(request, tokens)
        return True

    def _score_cost_per_sample(self, sample_tokens: int) -> int:
        """Verifier FLOPs to score one sample of ``sample_tokens`` (prefix bound + max new tokens).

        Exact for byte-level tokenizers (a score request bounds its text by bytes); with a
        subword tokenizer a sample's text can take more bytes than tokens, so a very tight
        cap can still leave the scoring short (the problem then stops with ``budget``).
        """
        return flops(self.costs.verifier, sample_tokens, sample_tokens)

    def _could_fit_later(self, problem: _Problem, request: Request) -> bool:
        """Whether ``request`` (at n=1) fits once every open reservation settles at zero."""
        if isinstance(request, GenerateRequest) and request.n > 1:
            request = replace(request, n=1)
        _, cost, _, _ = self._cost(request)
        remaining = self.budget.remaining(problem.problem_id, count_reserved=False)
        return self.budget.job_reserved > 0 and (remaining is None or cost <= remaining)

    # -- results --------------------------------------------------------------

    def update(self, results: list[Result]) -> None:
        """Settle each result's reservation and deliver it to its strategy (any subset, any order).

        Results of stopped problems are settled but not delivered; results of
        requests released by ``cancel`` are dropped.

        Raises:
            KeyError: a result whose request is not in flight.
            TypeError: a result of the wrong kind for its request.

        A result that cost more than its reservation (the backend counted more tokens than
        the token bound allowed, e.g. a chat template longer than the slack) is settled at
        its reservation, so no cap is passed, and stops its problem with an error in
        ``errors``; the other problems go on.
        """
        for result in results:
            request_id = result.request_id
            entry = self._in_flight.get(request_id)
            if entry is None:
                if request_id in self._orphaned:
                    self._orphaned.discard(request_id)
                    continue
                raise KeyError(f"result for request {request_id}, which is not in flight")
            request, problem = entry.request, entry.problem
            if isinstance(request, GenerateRequest) != isinstance(result, GenerateResult):
                raise TypeError(f"request {request_id} is a {type(request).__name__} "
                                f"but got a {type(result).__name__}")
            spec = self.costs.generator if isinstance(request, GenerateRequest) else self.costs.verifier
            actual = actual_flops(request, result, spec)
            if actual > entry.reservation.flops:
                self._overrun(entry, actual)
                continue
            self.budget.settle(entry.reservation, actual)
            del self._in_flight[request_id]
            del problem.in_flight[request_id]
            problem.stats.add(request, result, actual)
            self.totals.add(request, result, actual)
            strategy = problem.strategy
            if self.step_check is not None and isinstance(result, ScoreResult):
                result = checked_scores(problem.problem_id, request, result, self.step_check)
            if not strategy.done:
                strategy.on_result(request, result)
            if strategy.done:
                self._finish_if_done(problem)
            else:
                self._ready[problem.problem_id] = None

    def _overrun(self, entry: _InFlight, actual: int) -> None:
        """Stop the problem of a result that cost more than its reservation, within its caps."""
        request, problem = entry.request, entry.problem
        reserved = entry.reservation.flops
        del self._in_flight[request.request_id]
        del problem.in_flight[request.request_id]
        self.budget.settle(entry.reservation, reserved)  # the cap holds; the error says the rest
        role = "generator" if isinstance(request, GenerateRequest) else "verifier"
        self.errors.setdefault(problem.problem_id, (
            f"{role} request {request.request_id} cost {actual} FLOPs but reserved {reserved}: "
            f"the backend counted more tokens than the token bound allows (raise "
            f"budget.token_bound_slack, or use a backend that reports prompt token counts)"))
        self.cancel(problem.problem_id)

    def _finish_if_done(self, problem: _Problem) -> None:
        """Produce the Answer of a stopped problem once none of its requests is in flight."""
        strategy, problem_id = problem.strategy, problem.problem_id
        if not strategy.done or problem.in_flight:
            return
        if self._problems.get(problem_id) is not problem:
            return
        del self._problems[problem_id]
        problem.pending.clear()
        for queue in (self._ready, self._held, self._idle):
            queue.pop(problem_id, None)
        answer = strategy.answer()
        answer.extra["stats"] = problem.stats.to_dict()
        self._finished.append(answer)
