"""The multi-tree scheduler on a scripted in-process backend: routing, batching, budgets."""

import random
import zlib
from dataclasses import replace
from itertools import count

import pytest

from ponder.search import get_strategy, iter_strategies
from ponder.search.budget import BudgetManager
from ponder.search.flops import (ModelSpec, StepCosts, flops, generate_tokens, score_path_text,
                                 worst_case_flops, worst_case_tokens)
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from ponder.search.scheduler import Scheduler
from ponder.search.scripted import (ScriptedGenerator, ScriptedProblem, ScriptedTask,
                                    ScriptedVerifier, run_inprocess)
from ponder.search.strategies.base import Answer, JobContext, Strategy, StrategyParams
from ponder.search.tree import NodeStatus, Tree

GEN = ModelSpec("gen", num_params=10_000, num_layers=2, d_model=16)
VER = ModelSpec("ver", num_params=20_000, num_layers=2, d_model=16)


class ScriptedGreedyTask:
    step_delimiter = "\n"
    max_steps = 3

    def is_terminal(self, step):
        return False

    def extract_answer(self, steps):
        return steps[-1] if steps else None


class ScriptedGreedyStrategy(Strategy):
    """Greedy PRM search, small enough to check by eye: sample ``width`` children of the
    current node, score them, descend into the best, ``depth`` times. Checks its routing."""

    name = "scripted_greedy"

    def __init__(self, problem_id, next_request_id, width=4, depth=3, seed=0):
        super().__init__(Tree(problem_id, f"problem {problem_id}\n"), ScriptedGreedyTask(),
                         StrategyParams(), seed, next_request_id)
        self.width, self.depth = width, depth
        self.node_id = 0
        self.want = "generate"  # "generate" | "score" | None while waiting
        self.children: list[int] = []
        self.sent: dict[int, object] = {}  # request_id -> request this strategy emitted
        self.num_results = 0
        self.num_texts = 0

    def requests(self):
        if self.done or self.want is None:
            return []
        rid = self.next_request_id()
        if self.want == "generate":
            request = GenerateRequest(rid, self.tree.prefix(self.node_id), n=self.width,
                                      max_new_tokens=8, seed=self.seed_for(),
                                      prefix_id=self.tree.prefix_id(self.node_id))
        else:
            request = ScoreRequest(rid, self.tree.prompt,
                                   [self.tree.steps(c) for c in self.children],
                                   prefix_id=self.tree.prefix_id(self.node_id))
        self.sent[rid] = request
        self.want = None
        return [request]

    def on_result(self, request, result):
        assert self.sent.pop(request.request_id).request_id == result.request_id
        self.num_results += 1
        if isinstance(result, GenerateResult):
            assert 1 <= len(result.texts) == request.n <= self.width
            assert all(t.startswith(request.prefix_id + "#") for t in result.texts), "misrouted"
            self.num_texts += len(result.texts)
            self.children = [self.tree.add_child(self.node_id, t).node_id for t in result.texts]
            self.want = "score"
            return
        for child, scores in zip(self.children, result.step_scores):
            self.tree[child].scores = scores
        self.node_id = max(self.children, key=lambda c: self.tree[c].score)
        if self.tree[self.node_id].depth >= self.depth:
            self.tree[self.node_id].status = NodeStatus.TERMINAL
            self.stop("done")
        else:
            self.want = "generate"

    def answer(self):
        # The best so far is where the greedy descent has got to.
        steps = self.tree.steps(self.node_id)
        return Answer(self.problem_id, self.task.extract_answer(steps), steps,
                      self.tree[self.node_id].score, self.stop_reason or "running",
                      num_nodes=len(self.tree))


class ScriptedInstantBackend:
    """Answers at once with token counts inside the default bound; texts name their prefix."""

    def __init__(self, extra_prompt_tokens=0):
        self.extra_prompt_tokens = extra_prompt_tokens  # > 0 breaks the bound on purpose

    def generate(self, request):
        prompt = len(request.prefix.encode()) + self.extra_prompt_tokens
        return GenerateResult(
            request.request_id, [f"{request.prefix_id}#{request.seed}/{i}" for i in range(request.n)],
            [[1, 2]] * request.n, [-1.0] * request.n, num_prompt_tokens=request.n * prompt,
            num_cached_prompt_tokens=(request.n - 1) * prompt,
            num_generated_tokens=request.n * min(5, request.max_new_tokens))

    def score(self, request):
        scores = [[zlib.crc32(step.encode()) % 1000 / 1000 for step in path] for path in request.paths]
        tokens = sum(len(score_path_text(request.prompt, p).encode()) for p in request.paths)
        return ScoreResult(request.request_id, scores, tokens, 0)

    def run(self, plan):
        return ([self.generate(r) for batch in plan.generate_batches for r in batch]
                + [self.score(r) for batch in plan.score_batches for r in batch])


def _make(num_problems, budget, **kwargs):
    ids = count()
    scheduler = Scheduler(budget, GEN, VER, **kwargs)
    strategies = [ScriptedGreedyStrategy(f"p{i}", lambda: next(ids), seed=i)
                  for i in range(num_problems)]
    for strategy in strategies:
        scheduler.add(strategy)
    return scheduler, strategies


def _check_plan(scheduler, plan):
    for batches in (plan.generate_batches, plan.score_batches):
        for batch in batches:
            assert 1 <= len(batch) <= scheduler.max_batch_requests
            tokens = sum(worst_case_tokens(r)[0] for r in batch)
            assert len(batch) == 1 or tokens <= scheduler.max_batch_tokens


def _check_caps(budget):
    assert budget.job_remaining is None or budget.job_remaining >= 0
    for pid in budget.problem_ids:
        cap = budget.cap(pid)
        assert cap is None or budget.spent(pid) + budget.reserved(pid) <= cap


def _drive(scheduler, budget, rng, backend=None, trace=None):
    """Run to completion, feeding results back shuffled and in partial batches."""
    backend = backend or ScriptedInstantBackend()
    outstanding, answers = [], []
    for _ in range(100_000):
        if not scheduler.has_work:
            break
        plan = scheduler.schedule()
        _check_plan(scheduler, plan)
        # Nothing active is left waiting on nothing: no spinning engine loop.
        assert scheduler.num_active == 0 or scheduler.num_in_flight > 0
        if trace is not None:
            trace.append([[(r.request_id, getattr(r, "n", 0)) for r in b]
                          for b in plan.generate_batches + plan.score_batches])
        outstanding += backend.run(plan)
        rng.shuffle(outstanding)
        take = rng.randint(1, len(outstanding)) if outstanding else 0
        scheduler.update(outstanding[:take])
        del outstanding[:take]
        _check_caps(budget)
        answers += scheduler.pop_finished()
    else:
        raise AssertionError("the scheduler never ran out of work")
    assert outstanding == []
    return answers


# -- many trees -------------------------------------------------------------------------------

def test_thousand_trees_interleaved_all_finish_and_route_correctly():
    budget = BudgetManager()
    scheduler, strategies = _make(1000, budget, max_batch_requests=48, max_batch_tokens=4096)
    answers = _drive(scheduler, budget, random.Random(0))
    assert sorted(a.problem_id for a in answers) == sorted(s.problem_id for s in strategies)
    for strategy in strategies:
        assert strategy.stop_reason == "done" and not strategy.sent  # every request answered
        assert strategy.num_results == 2 * strategy.depth and strategy.num_texts == 12
    for answer in answers:
        stats = answer.extra["stats"]
        assert answer.stop_reason == "done" and len(answer.trace) == 3
        assert stats["flops"] == budget.spent(answer.problem_id) > 0
        assert stats["generator_flops"] == budget.spent_by_model(answer.problem_id)["generator"]
        assert stats["num_generate_requests"] == stats["num_score_requests"] == 3
    assert budget.num_open_reservations == 0 and budget.job_reserved == 0
    assert scheduler.num_in_flight == 0 and not scheduler.has_work


def test_caps_hold_and_tight_problems_stop_with_budget():
    rng = random.Random(1)
    strategy_cost = _cost_of_one_run()
    budget = BudgetManager(flops_total=150 * strategy_cost)
    scheduler, strategies = _make(200, budget, max_batch_requests=16, max_batch_tokens=2048)
    for strategy in strategies:  # from hopeless to ample
        budget.set_problem_cap(strategy.problem_id, rng.randint(0, 2 * strategy_cost))
    answers = _drive(scheduler, budget, rng)
    assert len(answers) == 200
    reasons = {a.stop_reason for a in answers}
    assert reasons == {"done", "budget"}
    for answer in answers:
        assert budget.spent(answer.problem_id) <= budget.cap(answer.problem_id)
    assert budget.job_spent <= budget.flops_total and budget.job_reserved == 0


def _cost_of_one_run():
    budget = BudgetManager()
    scheduler, _ = _make(1, budget)
    _drive(scheduler, budget, random.Random(0))
    return budget.job_spent


def test_same_strategies_and_result_order_give_same_plans():
    traces = []
    for _ in range(2):
        budget = BudgetManager(flops_per_problem=_cost_of_one_run())
        scheduler, _ = _make(50, budget, max_batch_requests=8, max_batch_tokens=512)
        trace = []
        _drive(scheduler, budget, random.Random(7), trace=trace)
        traces.append(trace)
    assert traces[0] == traces[1] and len(traces[0]) > 3


# -- budget exhaustion ------------------------------------------------------------------------

def _one(cap, **kwargs):
    budget = BudgetManager(flops_per_problem=cap)
    scheduler, (strategy,) = _make(1, budget, **kwargs)
    return budget, scheduler, strategy


def _step(scheduler, backend=ScriptedInstantBackend()):
    plan = scheduler.schedule()
    scheduler.update(backend.run(plan))
    return plan


def test_exhaustion_stops_with_best_answer_so_far():
    full = _cost_of_one_run()
    stopped = 0
    for cap in range(full // 2, full, max(1, full // 40)):  # caps that cut the third round
        budget, scheduler, strategy = _one(cap)
        answers = []
        while scheduler.has_work:
            _step(scheduler)
            answers += scheduler.pop_finished()
        (answer,) = answers
        assert budget.spent("p0") <= cap and budget.num_open_reservations == 0
        assert answer.stop_reason in ("budget", "done") and answer.trace
        if answer.stop_reason == "budget":
            stopped += 1
            assert strategy.stop_reason == "budget"
            assert len(answer.trace) == 2  # the best node after two scored rounds
            assert answer.answer == answer.trace[-1]
            assert answer.score == strategy.tree[strategy.node_id].score
        else:  # the last round shrank to what could be generated and scored
            assert len(answer.trace) == 3
    assert stopped > 0


def test_generate_n_shrinks_to_what_fits_with_room_to_score_it():
    one_sample = GenerateRequest(0, "problem p0\n", n=1, max_new_tokens=8)
    gen_tokens, _ = worst_case_tokens(one_sample)
    score = Scheduler(BudgetManager(), GEN, VER)._score_cost_per_sample(gen_tokens)
    cap = 2 * (_worst(one_sample) + score) + 1  # room for 2 of the 4 samples and their scoring
    budget, scheduler, strategy = _one(cap)
    plan = _step(scheduler)
    (request,) = plan.generate_batches[0]
    assert request.n == 2 and strategy.num_texts == 2 and len(strategy.tree.root.children) == 2
    assert scheduler.stats("p0").num_samples == 2
    plan = _step(scheduler)  # the score request fits: the samples get scored
    assert len(plan.score_batches) == 1 and len(plan.score_batches[0][0].paths) == 2
    assert budget.spent("p0") + budget.reserved("p0") <= cap


def test_generate_n_shrinks_with_a_prompt_computed_once():
    gen = replace(GEN, prompt_once=True)
    request = GenerateRequest(0, "problem p0\n", n=4, max_new_tokens=8)
    prompt, per_sample, context = generate_tokens(request, prompt_once=True)
    fixed, one = flops(gen, prompt, context), flops(gen, per_sample, context)
    score = Scheduler(BudgetManager(), gen, VER)._score_cost_per_sample(context)
    assert fixed > 0
    cap = fixed + 3 * (one + score) + 1  # room for the prompt, 3 of the 4 samples and their scoring
    budget = BudgetManager(flops_per_problem=cap)
    scheduler = Scheduler(budget, gen, VER)
    ids, cls = count(), get_strategy("best_of_n")
    params = cls.Params.from_dict({"n": 4, "max_solution_tokens": 8})
    scheduler.add(cls(Tree("p0", "problem p0\n"), ScriptedTask(), params, 0, lambda: next(ids)))
    (placed,) = scheduler.schedule().generate_batches[0]
    assert placed.n == 3
    assert budget.reserved("p0") == fixed + 3 * one == worst_case_flops(placed, gen)
    assert cap // (flops(gen, prompt + per_sample, context) + score) < 3  # a prompt a sample: fewer


def test_capped_best_of_n_with_a_huge_n_scores_its_samples():
    ids = count()
    cls = get_strategy("best_of_n")
    params = cls.Params.from_dict({"n": 1024, "max_solution_tokens": 16})
    task = ScriptedTask()
    one = worst_case_flops(GenerateRequest(0, "problem p0\n", n=1, max_new_tokens=16), GEN)
    cap = 40 * one
    budget = BudgetManager(flops_per_problem=cap)
    scheduler = Scheduler(budget, GEN, VER)
    scheduler.add(cls(Tree("p0", "problem p0\n"), task, params, 0, lambda: next(ids)))
    gen = scheduler.schedule().generate_batches[0][0]
    assert 1 <= gen.n < 40
    texts = [f"step {i}\nAnswer: {i % 3}\n" for i in range(gen.n)]
    scheduler.update([GenerateResult(gen.request_id, texts, [[1, 2]] * gen.n, [0.0] * gen.n, 3, 0,
                                     4 * gen.n)])
    (score,) = scheduler.schedule().score_batches[0]
    assert len(score.paths) == gen.n
    scheduler.update([ScoreResult(score.request_id, [[0.5] * len(p) for p in score.paths], 10, 0)])
    scheduler.schedule()
    (answer,) = scheduler.pop_finished()
    assert answer.stop_reason != "budget" and answer.answer is not None
    assert budget.spent("p0") <= cap


def _worst(request):
    return worst_case_flops(request, GEN)


def test_zero_budget_stops_before_any_request():
    budget, scheduler, strategy = _one(0)
    plan = scheduler.schedule()
    assert plan.is_empty and strategy.stop_reason == "budget"
    assert [a.stop_reason for a in scheduler.pop_finished()] == ["budget"]


def test_request_blocked_by_others_in_flight_is_held_not_stopped():
    ids = count()
    one_sample = _worst(GenerateRequest(0, "problem p0\n", n=1, max_new_tokens=8))
    budget = BudgetManager(flops_total=one_sample + one_sample // 2)  # one request at a time
    scheduler = Scheduler(budget, GEN, VER)
    first, second = (ScriptedGreedyStrategy(f"p{i}", lambda: next(ids), width=1) for i in range(2))
    scheduler.add(first)
    scheduler.add(second)
    plan = scheduler.schedule()
    assert [r.prefix_id for b in plan.generate_batches for r in b] == ["p0:0"]
    assert second.stop_reason is None and scheduler.num_active == 2  # held, not stopped
    scheduler.update(ScriptedInstantBackend().run(plan))  # p0 spent less than it reserved
    plan = scheduler.schedule()
    assert "p1:0" in [r.prefix_id for b in plan.generate_batches for r in b]  # the retry fits now
    scheduler.update(ScriptedInstantBackend().run(plan))
    answers = _drive(scheduler, budget, random.Random(3))
    assert sorted(a.problem_id for a in answers) == ["p0", "p1"]
    assert second.num_texts >= 1 and budget.job_spent <= budget.flops_total
    assert budget.num_open_reservations == 0


def test_result_over_its_reservation_stops_its_problem_not_the_others():
    budget = BudgetManager(flops_per_problem=10**12)
    scheduler, (a, b) = _make(2, budget)
    plan = scheduler.schedule()
    results = ScriptedInstantBackend().run(plan)
    p0_ids = {q.request_id for b in plan.generate_batches for q in b if q.prefix_id.startswith("p0:")}
    over = next(r for r in results if r.request_id in p0_ids)
    over.num_prompt_tokens += 10_000  # a chat template the token bound did not allow for
    scheduler.update(results)
    assert set(scheduler.errors) == {"p0"} and "reserved" in scheduler.errors["p0"]
    assert a.stop_reason == "cancelled" and b.stop_reason is None
    assert budget.spent("p0") <= 10**12 and budget.num_open_reservations == 0
    answers = _drive(scheduler, budget, random.Random(3))
    assert "p1" in {x.problem_id for x in answers}


# -- cancellation, failures, misuse -----------------------------------------------------------

def test_cancel_releases_reservations_and_drops_late_results():
    budget = BudgetManager(flops_per_problem=10**12)
    scheduler, (a, b) = _make(2, budget)
    plan = scheduler.schedule()
    assert budget.reserved("p0") > 0 and budget.num_open_reservations == 2
    assert scheduler.cancel("p0") is True
    assert budget.reserved("p0") == 0 and budget.spent("p0") == 0
    assert budget.num_open_reservations == 1 and scheduler.num_in_flight == 1
    (answer,) = scheduler.pop_finished()
    assert answer.problem_id == "p0" and answer.stop_reason == "cancelled" == a.stop_reason
    scheduler.update(ScriptedInstantBackend().run(plan))  # p0's late result is dropped
    assert a.num_results == 0 and b.num_results == 1 and budget.spent("p0") == 0
    assert scheduler.cancel("p0") is False and scheduler.cancel("nope") is False
    answers = _drive(scheduler, budget, random.Random(0))
    assert [x.stop_reason for x in answers] == ["done"] and budget.job_reserved == 0


def test_results_of_a_stopped_problem_are_settled_not_delivered():
    budget = BudgetManager()
    ids = count()
    scheduler = Scheduler(budget, GEN, VER)
    strategy = ScriptedGreedyStrategy("p0", lambda: next(ids))
    scheduler.add(strategy)
    plan = scheduler.schedule()
    strategy.stop("budget")  # e.g. an allocator took its budget while a request was in flight
    assert scheduler.pop_finished() == []  # the answer waits for the in-flight request
    scheduler.update(ScriptedInstantBackend().run(plan))
    assert strategy.num_results == 0 and budget.spent("p0") > 0 and budget.job_reserved == 0
    (answer,) = scheduler.pop_finished()
    assert answer.stop_reason == "budget" and answer.extra["stats"]["flops"] == budget.spent("p0")


def test_requeue_puts_a_failed_request_back():
    budget = BudgetManager()
    scheduler, (strategy,) = _make(1, budget)
    (request,) = scheduler.schedule().generate_batches[0]
    scheduler.requeue([request.request_id])
    assert budget.num_open_reservations == 0 and scheduler.num_in_flight == 0
    plan = scheduler.schedule()
    assert plan.generate_batches == [[request]]
    scheduler.update(ScriptedInstantBackend().run(plan))
    assert strategy.num_results == 1 and budget.num_open_reservations == 0


class ScriptedSilentStrategy(ScriptedGreedyStrategy):
    """Asks for nothing and never finishes: a strategy bug the scheduler must not spin on."""

    def requests(self):
        return []


def test_strategy_that_asks_for_nothing_is_stopped_as_stalled():
    budget = BudgetManager()
    scheduler = Scheduler(budget, GEN, VER)
    silent = ScriptedSilentStrategy("quiet", lambda: 0)
    scheduler.add(silent)
    assert scheduler.schedule().is_empty
    assert silent.stop_reason == "stalled" and not scheduler.num_active
    assert [a.problem_id for a in scheduler.pop_finished()] == ["quiet"]
    assert not scheduler.has_work


def test_misuse_raises_clear_errors():
    budget = BudgetManager()
    scheduler, (strategy,) = _make(1, budget)
    with pytest.raises(ValueError, match="'p0' is already being searched"):
        scheduler.add(strategy)
    plan = scheduler.schedule()
    (request,) = plan.generate_batches[0]
    with pytest.raises(KeyError, match="request 999"):
        scheduler.update([ScoreResult(999, [], 0, 0)])
    with pytest.raises(TypeError, match="GenerateRequest but got a ScoreResult"):
        scheduler.update([ScoreResult(request.request_id, [], 0, 0)])
    twin = ScriptedGreedyStrategy("p1", lambda: request.request_id)  # reuses an id in flight
    scheduler.add(twin)
    with pytest.raises(ValueError, match=f"request id {request.request_id} of problem 'p1'"):
        scheduler.schedule()
    with pytest.raises(ValueError, match="max_batch_tokens must be >= 1, got 0"):
        Scheduler(budget, GEN, VER, max_batch_tokens=0)


# -- the real strategies, on the scripted backends ------------------------------------------

class ScriptedModels:
    """ScriptedGenerator + ScriptedVerifier behind the ``run(plan)`` of ScriptedInstantBackend."""

    def __init__(self, problems):
        self.generator = ScriptedGenerator(problems, seed=1)
        self.verifier = ScriptedVerifier(problems, seed=2)

    def run(self, plan):
        results = []
        for batch in plan.generate_batches:
            results += self.generator.generate(batch)
        for batch in plan.score_batches:
            results += self.verifier.score(batch)
        return results


def _scripted_job(name, params, num_problems, budget):
    problems = [ScriptedProblem(prompt=f"Problem {i}: find it.\n", p_correct=0.3 + 0.06 * (i % 10))
                for i in range(num_problems)]
    cls = get_strategy(name)
    ids = count()
    models = ScriptedModels(problems)
    costs = StepCosts(models.generator.model_spec(), models.verifier.model_spec())
    context = JobContext(budget=budget, step_costs=costs)
    strategies = [cls(Tree(f"q{i}", p.prompt), ScriptedTask(), cls.Params.from_dict(params), i,
                      lambda: next(ids), context) for i, p in enumerate(problems)]
    return strategies, models


@pytest.mark.parametrize("name", list(iter_strategies()))
def test_scheduling_changes_no_answer_without_a_cap(name):
    reference, models = _scripted_job(name, {}, 12, None)
    expected = run_inprocess(reference, models.generator, models.verifier)
    budget = BudgetManager()
    strategies, models = _scripted_job(name, {}, 12, budget)
    scheduler = Scheduler(budget, models.generator.model_spec(), models.verifier.model_spec(),
                          max_batch_requests=5)
    for strategy in strategies:
        scheduler.add(strategy)
    answers = {a.problem_id: a for a in _drive(scheduler, budget, random.Random(5), models)}
    for want in expected:
        got = answers[want.problem_id]
        assert (got.answer, got.trace, got.score, got.stop_reason) == (
            want.answer, want.trace, want.score, want.stop_reason)
        assert got.extra["stats"]["flops"] == budget.spent(want.problem_id) > 0
    assert budget.job_reserved == 0 and sum(a.answer == "42" for a in answers.values()) > 0


@pytest.mark.parametrize("name, params", [
    ("best_of_n", {"n": 8, "max_solution_tokens": 48}),
    ("beam", {"beam_width": 2, "expansion_factor": 3}),
    ("beam", {"beam_width": 2, "expansion_factor": 3, "pace": False}),
])
def test_real_strategies_stop_at_their_caps(name, params):
    # Probe what one problem spends uncapped, then cap every problem below that.
    budget = BudgetManager()
    strategies, models = _scripted_job(name, params, 1, budget)
    scheduler = Scheduler(budget, models.generator.model_spec(), models.verifier.model_spec())
    scheduler.add(strategies[0])
    _drive(scheduler, budget, random.Random(0), models)
    full = budget.job_spent
    budget = BudgetManager(flops_total=20 * full, flops_per_problem=full * 3 // 4)
    strategies, models = _scripted_job(name, params, 30, budget)
    scheduler = Scheduler(budget, models.generator.model_spec(), models.verifier.model_spec(),
                          max_batch_requests=7)
    for strategy in strategies:
        scheduler.add(strategy)
    answers = _drive(scheduler, budget, random.Random(1), models)
    reasons = {a.stop_reason for a in answers}
    assert len(answers) == 30 and reasons <= {"done", "budget", "no_answer"}
    for answer in answers:
        assert budget.spent(answer.problem_id) <= full * 3 // 4
    assert budget.job_spent <= 20 * full and budget.num_open_reservations == 0
    if name == "best_of_n":  # its one request shrank to fit, and finished with fewer samples
        samples = [a.extra["stats"]["num_samples"] for a in answers]
        assert 1 <= min(samples) and max(samples) < 8
        assert reasons == {"done"} and any(a.answer is not None for a in answers)
    elif params.get("pace", True):  # paced: levels narrow to what is left, and paths finish
        assert reasons <= {"done", "no_answer"} and all(a.trace for a in answers)
        assert all(a.extra["num_paced"] >= 1 for a in answers)
    else:  # level by level, the cap ends the search with the best path so far
        assert "budget" in reasons and all(a.trace for a in answers)


def test_beam_pacing_changes_nothing_when_the_cap_is_ample():
    answers = {}
    for pace in (True, False):
        budget = BudgetManager(flops_per_problem=10**15)
        strategies, models = _scripted_job("beam", {"beam_width": 2, "expansion_factor": 3, "pace": pace},
                                           6, budget)
        scheduler = Scheduler(budget, models.generator.model_spec(), models.verifier.model_spec())
        for strategy in strategies:
            scheduler.add(strategy)
        got = _drive(scheduler, budget, random.Random(0), models)
        answers[pace] = sorted((a.problem_id, a.answer, a.trace, a.extra["stats"]["flops"]) for a in got)
        assert all(a.extra["num_paced"] == 0 for a in got)
    assert answers[True] == answers[False]


def test_paced_beam_levels_are_placed_whole():
    # Under a tight cap every paced level fits at once: the scheduler never cuts an n short.
    probe = BudgetManager()
    strategies, models = _scripted_job("beam", {"beam_width": 3, "expansion_factor": 3}, 1, probe)
    scheduler = Scheduler(probe, models.generator.model_spec(), models.verifier.model_spec())
    scheduler.add(strategies[0])
    _drive(scheduler, probe, random.Random(0), models)
    budget = BudgetManager(flops_per_problem=probe.job_spent // 2)
    strategies, models = _scripted_job("beam", {"beam_width": 3, "expansion_factor": 3}, 8, budget)
    scheduler = Scheduler(budget, models.generator.model_spec(), models.verifier.model_spec())
    asked: dict[int, int] = {}
    for strategy in strategies:
        original = strategy.search._expand

        def expand(widths, search=strategy.search, original=original):
            original(widths)
            for request in search._outbox:
                asked[request.request_id] = request.n
        strategy.search._expand = expand
        scheduler.add(strategy)
    trace: list = []
    answers = _drive(scheduler, budget, random.Random(2), models, trace=trace)
    placed = {rid: n for plan in trace for batch in plan for rid, n in batch if rid in asked}
    assert placed == asked  # every paced generate request went out with the n it asked for
    assert {a.stop_reason for a in answers} <= {"done", "no_answer"} and all(a.trace for a in answers)
    assert sum(a.extra["num_paced"] for a in answers) > 0


def test_held_requests_of_a_strategy_stopped_from_outside_are_dropped():
    one_sample = _worst(GenerateRequest(0, "problem p0\n", n=1, max_new_tokens=8))
    budget = BudgetManager(flops_total=one_sample + one_sample // 2)
    ids = count()
    scheduler = Scheduler(budget, GEN, VER)
    first, second = (ScriptedGreedyStrategy(f"p{i}", lambda: next(ids), width=1) for i in range(2))
    scheduler.add(first)
    scheduler.add(second)
    plan = scheduler.schedule()  # p1's request is held behind p0's
    second.stop("done")
    assert scheduler.schedule().is_empty
    assert [a.problem_id for a in scheduler.pop_finished()] == ["p1"]
    scheduler.update(ScriptedInstantBackend().run(plan))
    assert second.num_results == 0 and budget.spent("p1") == 0 and scheduler.num_active == 1
