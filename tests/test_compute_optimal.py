"""The compute-optimal allocator and strategy: budget goes where more search pays."""

from __future__ import annotations

import itertools

import pytest

from ponder.search.allocate import (AllocationPolicy, Allocator, DifficultyEstimate,
                                    estimate_difficulty)
from ponder.search.budget import BudgetManager
from ponder.search.scheduler import Scheduler
from ponder.search.scripted import (ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier,
                                    run_inprocess, run_scheduled)
from ponder.search.strategies import JobContext, get_strategy
from ponder.search.tree import Tree

PROBLEMS = {  # problem_id -> a scripted problem of that difficulty
    "easy": ScriptedProblem("Q: easy\n", p_correct=0.95),
    "medium": ScriptedProblem("Q: medium\n", p_correct=0.75),
    "hard": ScriptedProblem("Q: hard\n", p_correct=0.8, good_score=0.35),  # the verifier doubts
    "hopeless": ScriptedProblem("Q: hopeless\n", p_correct=0.0),  # no sample can be right
}
TASK = ScriptedTask()
PARAMS = {"max_solution_tokens": 64, "max_step_tokens": 16}


def estimate(pid: str, agreement: float, best: float, majority: float | None = None,
             spent: int = 80_000, num_samples: int = 8) -> DifficultyEstimate:
    return DifficultyEstimate(pid, num_samples, agreement, best if majority is None else majority,
                              best, spent)


REPORTS = [estimate("easy", 0.9, 0.9), estimate("medium", 0.4, 0.85),
           estimate("hard", 0.5, 0.35), estimate("hopeless", 0.5, 0.1)]


# -- the policy -------------------------------------------------------------------------

def test_classify_bins_by_agreement_and_verifier_scores():
    policy = AllocationPolicy()
    assert [policy.classify(e) for e in REPORTS] == ["easy", "medium", "hard", "hopeless"]
    # A confident majority the verifier does not believe is not easy.
    assert policy.classify(estimate("x", 0.9, 0.8, majority=0.3)) == "medium"
    assert policy.classify(estimate("x", 0.0, 0.0)) == "hopeless"  # nothing answered


def test_estimate_difficulty_summarizes_a_probe():
    est = estimate_difficulty("p", ["42", "7", "42", None], [0.9, 0.95, 0.6, 0.99], num_samples=5,
                              spent=123)
    assert est.agreement == pytest.approx(2 / 5)  # of all samples, cut-off ones included
    assert est.majority_score == 0.9 and est.best_score == 0.95  # an unanswered path does not count
    assert est.num_samples == 5 and est.spent == 123
    with pytest.raises(ValueError, match="one score per answer"):
        estimate_difficulty("p", ["1"], [], num_samples=1)


def test_policy_validation_names_the_bad_field():
    with pytest.raises(ValueError, match="hopeless_score"):
        get_strategy("compute_optimal").Params.from_dict({"hopeless_score": 0.8, "medium_score": 0.5})
    with pytest.raises(ValueError, match="easy_score must be in"):
        AllocationPolicy(easy_score=1.5).validate()


# -- the allocator on its own ---------------------------------------------------------------

def budget_with(pids, **caps) -> BudgetManager:
    budget = BudgetManager(**caps)
    for pid in pids:
        budget.add_problem(pid)
    return budget


def test_job_pool_goes_to_medium_then_hard_then_easy_after_all_reported():
    budget = budget_with(["easy", "medium", "hard", "hopeless"], flops_total=1_000_000)
    for pid in ("easy", "medium", "hard", "hopeless"):
        budget.settle(budget.reserve(pid, 80_000), 80_000)  # what each probe spent
    allocator = Allocator(budget)
    for report in REPORTS:
        allocator.register(report.problem_id)
    for report in REPORTS[:3]:
        allocator.report(report)
        assert allocator.decision(report.problem_id) is None  # waits for the whole group
    allocator.report(REPORTS[3])
    d = {pid: allocator.decision(pid) for pid in PROBLEMS}
    assert d["medium"].grant > d["hard"].grant > d["easy"].grant > d["hopeless"].grant == 0
    assert sum(x.grant for x in d.values()) <= 1_000_000 - 4 * 80_000
    assert [d[p].strategy for p in PROBLEMS] == ["best_of_n", "beam", "dvts", "stop"]
    assert d["medium"].num_samples > d["hard"].num_samples > d["easy"].num_samples
    for pid, decision in d.items():  # caps enforce the grants; the hopeless one is frozen
        assert budget.cap(pid) == 80_000 + decision.grant
    assert budget.remaining("hopeless") == 0


def test_phase2_is_sized_by_reservations_but_a_paced_beam_by_spend():
    def decide(worst_case, best_score):
        budget = budget_with(["m"], flops_per_problem=10**6)
        budget.settle(budget.reserve("m", 100_000), 50_000)  # a probe half served from cache
        allocator = Allocator(budget)
        allocator.register("m")
        report = estimate("m", 0.4, best_score)
        report.spent, report.worst_case = 50_000, worst_case
        allocator.report(report)
        return allocator.decision("m")

    # hard -> dvts, which does not pace itself: sized by what the probe reserved
    by_spent, by_worst = decide(0, 0.35), decide(100_000, 0.35)  # 0: unknown, falls back to spent
    assert by_spent.strategy == by_worst.strategy == "dvts" and by_spent.grant == by_worst.grant
    assert by_worst.num_samples == pytest.approx(by_spent.num_samples / 2, abs=1)
    # medium -> beam, which narrows to its cap: sized by what the probe spent
    by_spent, by_worst = decide(0, 0.85), decide(100_000, 0.85)
    assert by_spent.strategy == by_worst.strategy == "beam"
    assert by_worst.num_samples == by_spent.num_samples > 0


def test_a_problem_that_leaves_does_not_hold_up_the_others():
    allocator = Allocator(budget_with(["a", "b"], flops_total=10**6))
    allocator.register("a")
    allocator.register("b")
    allocator.report(estimate("a", 0.4, 0.9))
    assert allocator.decision("a") is None
    allocator.leave("b")  # e.g. cancelled while probing
    assert allocator.decision("a").bin == "medium"
    assert allocator.decision("a").grant == 10**6  # all of the pool: nobody else is left


def test_without_a_job_cap_problem_caps_move_between_problems():
    budget = budget_with(PROBLEMS, flops_per_problem=100_000)
    allocator = Allocator(budget)
    for report in REPORTS:
        allocator.register(report.problem_id)
    for report in REPORTS:
        allocator.report(report)
    caps = {pid: budget.cap(pid) for pid in PROBLEMS}
    assert sum(caps.values()) <= 4 * 100_000  # moved, not created
    assert caps["medium"] > caps["hard"] > 100_000 > caps["easy"] > caps["hopeless"] == 0


def test_early_groups_leave_a_share_for_problems_not_yet_registered():
    budget = budget_with(["a", "b"], flops_total=1_000_000)
    allocator = Allocator(budget, num_problems=4)
    allocator.register("a")
    allocator.report(estimate("a", 0.4, 0.9))
    assert allocator.decision("a").grant == 250_000  # 3 of the 4 problems are still to come
    allocator.register("b")
    allocator.report(estimate("b", 0.4, 0.9))
    # "a" may still spend its grant; of the rest, "b" takes 1 share of the 3 left.
    assert allocator.decision("b").grant == 250_000


def test_without_a_budget_the_fixed_rule_decides_at_once():
    allocator = Allocator(None, AllocationPolicy(fixed_num_samples=20))
    allocator.register("m")
    allocator.register("e")
    allocator.report(estimate("m", 0.4, 0.9))
    decision = allocator.decision("m")  # no waiting for "e": there is nothing to share
    assert decision.strategy == "beam" and decision.num_samples == 20 and decision.grant is None
    allocator.report(estimate("e", 0.9, 0.9))
    assert allocator.decision("e").num_samples == 2  # 20 * 0.1
    allocator.report(estimate("h", 0.5, 0.05))
    assert allocator.decision("h").strategy == "stop"


def test_an_unlimited_budget_uses_the_fixed_rule_too():
    allocator = Allocator(budget_with(["m"]))
    allocator.register("m")
    allocator.report(estimate("m", 0.4, 0.9))
    assert allocator.decision("m").grant is None and allocator.decision("m").num_samples == 16


# -- the strategy, end to end -------------------------------------------------------------------

def add_all(scheduler: Scheduler, context: JobContext, **params):
    cls = get_strategy("compute_optimal")
    ids = itertools.count()
    strategies = {}
    for pid, problem in PROBLEMS.items():
        strategies[pid] = cls(Tree(pid, problem.prompt), TASK, cls.Params.from_dict({**PARAMS, **params}),
                              0, lambda: next(ids), context)
        scheduler.add(strategies[pid])
    return strategies


def run_job(**caps):
    backends = ScriptedGenerator(list(PROBLEMS.values())), ScriptedVerifier(list(PROBLEMS.values()))
    budget = BudgetManager(**caps)
    scheduler = Scheduler(budget, backends[0].model_spec(), backends[1].model_spec())
    context = JobContext(budget=budget)
    strategies = add_all(scheduler, context)
    answers = {a.problem_id: a for a in run_scheduled(scheduler, *backends)}
    return answers, context.shared["compute_optimal"], budget, strategies


def test_job_cap_puts_search_where_it_pays_and_stops_hopeless_problems():
    answers, allocator, budget, _ = run_job(flops_total=60_000_000)
    assert {pid: a.extra["bin"] for pid, a in answers.items()} == {p: p for p in PROBLEMS}
    phase2 = {pid: a.extra["stats"]["flops"] - allocator.estimates[pid].spent
              for pid, a in answers.items()}
    assert phase2["medium"] > phase2["easy"] and phase2["medium"] > phase2["hopeless"] == 0
    assert phase2["hard"] > phase2["easy"]
    assert answers["hopeless"].extra["phase2"] == "stop" and answers["hopeless"].stop_reason == "done"
    for pid in ("easy", "medium", "hard"):
        assert answers[pid].answer == "42", answers[pid]
    assert budget.job_spent <= 60_000_000
    for estimate_ in allocator.estimates.values():  # the probe reports its reservations too
        assert estimate_.worst_case >= estimate_.spent > 0


def test_per_problem_caps_without_a_job_cap_are_reallocated():
    answers, allocator, budget, _ = run_job(flops_per_problem=15_000_000)
    caps = {pid: budget.cap(pid) for pid in PROBLEMS}
    assert caps["medium"] > 15_000_000 > caps["easy"]
    assert caps["hopeless"] == allocator.estimates["hopeless"].spent
    assert sum(caps.values()) <= 4 * 15_000_000
    assert all(budget.spent(pid) <= caps[pid] for pid in PROBLEMS)
    assert answers["medium"].answer == "42"


def test_without_a_budget_each_problem_gets_the_fixed_rule():
    problems = list(PROBLEMS.values())
    cls = get_strategy("compute_optimal")
    ids = itertools.count()
    context = JobContext()  # no budget
    strategies = [cls(Tree(pid, p.prompt), TASK, cls.Params.from_dict(PARAMS), 0, lambda: next(ids),
                      context) for pid, p in PROBLEMS.items()]
    answers = run_inprocess(strategies, ScriptedGenerator(problems), ScriptedVerifier(problems))
    assert [a.extra["phase2"] for a in answers] == ["best_of_n", "beam", "dvts", "stop"]
    medium = strategies[1]
    assert medium.inner.params.beam_width == 16 // 4  # fixed_num_samples over the expansion factor
    assert [a.answer for a in answers[:3]] == ["42"] * 3
    assert len(strategies[3].tree) == len(strategies[3].probe.tree)  # hopeless: probe only


def test_a_problem_cancelled_while_probing_does_not_stall_the_rest():
    backends = ScriptedGenerator(list(PROBLEMS.values())), ScriptedVerifier(list(PROBLEMS.values()))
    budget = BudgetManager(flops_total=60_000_000)
    scheduler = Scheduler(budget, backends[0].model_spec(), backends[1].model_spec())
    context = JobContext(budget=budget)
    add_all(scheduler, context)
    plan = scheduler.schedule()  # the probes are in flight...
    scheduler.cancel("hard")  # ...when one problem is cancelled
    results = [r for batch in plan.generate_batches for r in backends[0].generate(batch)]
    scheduler.update(results)  # the cancelled problem's result is dropped
    answers = {a.problem_id: a for a in scheduler.pop_finished() + run_scheduled(scheduler, *backends)}
    assert answers["hard"].stop_reason == "cancelled"
    assert answers["medium"].extra["phase2"] == "beam" and answers["medium"].answer == "42"
    assert "hard" not in context.shared["compute_optimal"].decisions
