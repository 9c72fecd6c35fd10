"""Search strategies on scripted problems: they find the answer the verifier points to, and behave."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
import subprocess
import sys

import pytest

from ponder.search.budget import BudgetManager
from ponder.search.messages import GenerateRequest, GenerateResult
from ponder.search.scheduler import Scheduler
from ponder.search.scripted import (ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier,
                                    run_inprocess, run_scheduled)
from ponder.search.strategies import get_strategy, iter_strategies
from ponder.search.strategies.rebase import softmax_widths
from ponder.search.tree import NodeStatus, Tree

# One popular wrong answer: a plain vote over whole samples picks it, a step verifier does not.
TRAP = ScriptedProblem("Q: trap\n", answer="42", num_steps=4, p_correct=0.6, wrong_answers=("7",))
TASK = ScriptedTask()
TREE_SEARCHES = ("beam", "dvts", "rebase", "mcts")
ALL = TREE_SEARCHES + ("best_of_n", "compute_optimal")
SMALL = {  # sizes that keep each test fast
    "best_of_n": {"n": 32, "selection": "best"}, "beam": {"beam_width": 2, "expansion_factor": 3},
    "dvts": {"num_samples": 8, "beam_width": 4}, "rebase": {"width": 8},
    "mcts": {"num_simulations": 32}, "compute_optimal": {"num_probe_samples": 8},
}


class RequestIds:
    """Hands out request ids; a plain object, so that a strategy holding it pickles."""

    def __init__(self):
        self.next_id = 0

    def __call__(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def make(name: str, problem: ScriptedProblem = TRAP, seed: int = 0, **params):
    cls = get_strategy(name)
    return cls(Tree(problem.prompt.strip(), problem.prompt), TASK,
               cls.Params.from_dict({**SMALL[name], **params}), seed, RequestIds())


def solve(name: str, problem: ScriptedProblem = TRAP, seed: int = 0, generator=None, shuffle_seed=None,
          **params):
    strategy = make(name, problem, seed, **params)
    generator = generator or ScriptedGenerator([problem])
    answer = run_inprocess([strategy], generator, ScriptedVerifier([problem]), shuffle_seed=shuffle_seed)[0]
    return answer, strategy


def canonical(tree: Tree) -> list[tuple]:
    """The tree as sorted paths, blind to the order node ids were handed out in."""
    return sorted((tuple(tree.steps(n.node_id)), n.status, tuple(n.scores), n.answer) for n in tree.nodes)


def on_track(tree: Tree, node_id: int) -> bool:
    return TRAP.on_track(tree.steps(node_id))


# -- registry and parameters ---------------------------------------------------------

def test_search_core_imports_neither_ray_nor_torch():
    code = ("import sys, ponder.search.strategies, ponder.search.scripted, ponder.search.allocate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_finds_every_strategy_and_names_the_valid_ones():
    assert set(ALL) <= set(iter_strategies())
    with pytest.raises(ValueError, match="unknown strategy 'nope'; valid: beam, best_of_n"):
        get_strategy("nope")


@pytest.mark.parametrize("name", ALL)
def test_params_reject_unknown_keys_and_bad_values(name):
    cls = get_strategy(name)
    with pytest.raises(ValueError, match="unknown search parameter"):
        cls.Params.from_dict({"beam_widht": 3})
    with pytest.raises(ValueError, match="search.agg|aggregation"):
        cls.Params.from_dict({"agg": "median"})


def test_bad_selection_names_the_value_and_the_valid_ones():
    message = "search.selection must be one of majority, weighted, best; got 'vote'"
    with pytest.raises(ValueError, match=message):
        get_strategy("beam").Params.from_dict({"selection": "vote"})


# -- finding the answer ----------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ALL)
def test_each_strategy_finds_the_answer_the_verifier_points_to(name, seed):
    answer, strategy = solve(name, seed=seed)
    assert answer.answer == "42", answer
    assert answer.stop_reason == "done" and strategy.done
    assert answer.trace[-1] == "Answer: 42" and TRAP.on_track(answer.trace)


def test_majority_vote_falls_for_the_trap_and_the_verifier_does_not():
    voted, _ = solve("best_of_n", selection="majority")
    best, _ = solve("best_of_n", selection="best")
    assert voted.answer == "7" and voted.score > 0.5
    assert best.answer == "42" and best.score > 0.8


def test_best_of_n_makes_exactly_n_generations_as_chains():
    generator = ScriptedGenerator([TRAP])
    answer, strategy = solve("best_of_n", generator=generator, n=7)
    assert generator.num_requests == 1 and generator.num_texts == 7
    tree = strategy.tree
    assert len(tree.root.children) == 7 and len(strategy.leaves) == 7
    for leaf in strategy.leaves:  # each sample is a chain whose every step carries its scores
        path = tree.path(leaf)
        assert len(path) == TRAP.num_steps and path[-1].is_terminal
        assert [len(n.scores) for n in path] == list(range(1, TRAP.num_steps + 1))
    assert answer.extra["num_samples"] == 7


# -- strategy-specific behaviour ---------------------------------------------------------

def test_beam_keeps_its_width_and_prunes_the_rest():
    answer, strategy = solve("beam", beam_width=2, expansion_factor=3)
    levels = strategy.search.levels
    assert levels[0] == {0: 6}  # the root draws beam_width * expansion_factor samples
    assert all(len(level) <= 2 and sum(level.values()) == 6 for level in levels)
    tree = strategy.tree
    pruned = [n for n in tree.nodes if n.status == NodeStatus.PRUNED]
    assert pruned and all(not n.children for n in pruned)
    values = strategy.search.values
    for level in levels[1:]:  # the beams kept are never worse than a (distinct) child pruned beside them
        depth = tree[next(iter(level))].depth
        kept = {(tree[n].parent_id, tree[n].text) for n in level}
        dropped = [values[n.node_id] for n in pruned
                   if n.depth == depth and (n.parent_id, n.text) not in kept]
        assert all(min(values[n] for n in level) >= d for d in dropped)


def test_beam_root_samples_widens_only_the_first_level():
    answer, strategy = solve("beam", beam_width=2, expansion_factor=3, root_samples=10)
    levels = strategy.search.levels
    assert answer.answer == "42"
    assert levels[0] == {0: 10} and len(strategy.tree.root.children) == 10
    assert all(sum(level.values()) == 6 for level in levels[1:])  # then width x expansion again


def test_beam_drops_duplicate_children_before_filling_its_slots():
    from ponder.search.strategies.beam import KeepTop
    from ponder.search.tree import Tree

    class _Search:  # what KeepTop reads of a LevelSearch
        def __init__(self, tree):
            self.strategy = type("S", (), {"tree": tree})()

    tree = Tree("p", "prompt")
    a1, a2, b, c = (tree.add_child(0, t).node_id for t in ("1 + 1 = 2", "1 + 1 = 2", "2 * 2 = 4", "3 - 1 = 2"))
    values = {a1: 0.9, a2: 0.9, b: 0.5, c: 0.4}
    _, plain = KeepTop(2, 4)(_Search(tree), [a1, a2, b, c], values)
    assert list(plain) == [a1, a2]  # the same step twice holds both slots
    _, unique = KeepTop(2, 4, filter_duplicates=True)(_Search(tree), [a1, a2, b, c], values)
    assert list(unique) == [a1, b] and sum(unique.values()) == 4


def test_beam_lookahead_rolls_out_before_scoring_and_keeps_rollouts_off_the_tree():
    plain_generator, generator = ScriptedGenerator([TRAP]), ScriptedGenerator([TRAP])
    _, plain = solve("beam", generator=plain_generator)
    answer, strategy = solve("beam", generator=generator, lookahead=2)
    assert answer.answer == "42"
    assert len(strategy.tree) == len(plain.tree)  # rollouts add requests, not nodes
    assert generator.num_requests > plain_generator.num_requests
    assert all(len(n.scores) == n.depth for n in strategy.tree.nodes if n.scores)


def test_mcts_visits_concentrate_on_the_best_child():
    _, strategy = solve("mcts", num_simulations=40)
    tree = strategy.tree
    children = [tree[c] for c in tree.root.children]
    most = max(children, key=lambda c: c.visits)
    assert on_track(tree, most.node_id)
    right = sum(c.visits for c in children if on_track(tree, c.node_id))
    wrong = sum(c.visits for c in children if not on_track(tree, c.node_id))
    assert right > 2 * wrong
    assert tree.root.visits == strategy.num_started  # one visit per simulation


def test_mcts_progressive_widening_bounds_children():
    _, strategy = solve("mcts", num_simulations=30, widen_k=1.0, widen_alpha=0.5)
    for node in strategy.tree.nodes:
        # Samples were drawn when the node had no more visits than now.
        drawn = strategy.num_drawn.get(node.node_id, 0)
        assert len(node.children) <= drawn <= math.ceil(max(node.visits, 1) ** 0.5)
    assert strategy.num_drawn[0] > 2  # the root did widen
    texts = [[strategy.tree[c].text for c in n.children] for n in strategy.tree.nodes]
    assert all(len(set(t)) == len(t) for t in texts)  # duplicate samples merged


def test_mcts_with_rollouts_and_uniform_priors_still_finds_it():
    answer, strategy = solve("mcts", rollout_depth=2, prior="uniform", num_parallel=2)
    assert answer.answer == "42"


def test_dvts_subtrees_are_disjoint_below_the_root():
    answer, strategy = solve("dvts", num_samples=12, beam_width=3)
    tree = strategy.tree
    assert len(strategy.subtrees) == 4
    owned = [set(s.node_ids) for s in strategy.subtrees]
    assert all(not (a & b) for a, b in itertools.combinations(owned, 2))
    assert set().union(*owned) == set(range(1, len(tree)))
    for nodes in owned:  # every node of a subtree descends from that subtree's own root children
        tops = {tree.path(n)[0].node_id for n in nodes}
        assert tops <= nodes and len(tops) == 3
        assert all(len(level) == 1 and list(level.values()) == [3] for level in
                   next(s.levels for s in strategy.subtrees if set(s.node_ids) == nodes))
    assert answer.answer == "42" and answer.extra["num_subtrees"] == 4


def test_rebase_softmax_widths_favour_higher_scores_and_add_up():
    widths = softmax_widths({5: 0.1, 6: 0.9, 7: 0.5, 8: 0.9}, total=10, temperature=0.2)
    assert sum(widths.values()) == 10
    assert widths[6] >= widths[8] >= widths.get(7, 0) >= widths.get(5, 0)
    assert widths[6] > widths.get(7, 0)
    flat = softmax_widths({1: 0.2, 2: 0.9}, total=4, temperature=100.0)
    assert flat == {1: 2, 2: 2}
    assert softmax_widths({1: 0.5}, total=0, temperature=1.0) == {}


def test_rebase_expands_higher_scored_nodes_wider():
    answer, strategy = solve("rebase", width=12, balance_temperature=0.2)
    search = strategy.search
    compared = 0
    for level in search.levels[1:]:
        by_value = sorted(level, key=lambda n: -search.values[n])
        widths = [level[n] for n in by_value]
        assert widths == sorted(widths, reverse=True)
        compared += len(level) > 1 and widths[0] > widths[-1]
    assert compared >= 1  # some level really split its width unevenly
    assert search.levels[0] == {0: 12} and all(sum(level.values()) == 12 for level in search.levels)
    assert answer.answer == "42"


# -- determinism, early stops and budget shrink ------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_tree_in_any_result_order(name):
    _, first = solve(name, seed=5)
    _, again = solve(name, seed=5)
    _, shuffled = solve(name, seed=5, shuffle_seed=123)
    _, other = solve(name, seed=6)
    assert canonical(first.tree) == canonical(again.tree) == canonical(shuffled.tree)
    assert [n.text for n in first.tree.nodes] == [n.text for n in again.tree.nodes]
    assert canonical(first.tree) != canonical(other.tree)


def drive(strategy, generator, verifier, rounds: int) -> None:
    """Run ``rounds`` rounds of requests by hand, without finishing."""
    for _ in range(rounds):
        for request in strategy.requests():
            backend = generator.generate if isinstance(request, GenerateRequest) else verifier.score
            strategy.on_result(request, backend([request])[0])


@pytest.mark.parametrize("name", TREE_SEARCHES)
def test_stopped_for_budget_gives_the_best_so_far(name):
    strategy = make(name)
    generator, verifier = ScriptedGenerator([TRAP]), ScriptedVerifier([TRAP])
    drive(strategy, generator, verifier, rounds=3)
    assert not strategy.done
    strategy.stop("budget")
    answer = strategy.answer()
    assert answer.stop_reason == "budget" and strategy.requests() == []
    assert answer.trace and answer.score is not None  # the best partial path, with its score
    assert answer.score == max(n.scores[-1] for n in strategy.tree.nodes if n.scores)
    num_nodes = len(strategy.tree)
    stray = GenerateRequest(10_000, TRAP.prompt, n=2)
    strategy.on_result(stray, generator.generate([stray])[0])  # results in flight are ignored
    assert len(strategy.tree) == num_nodes


@pytest.mark.parametrize("name", ALL)
def test_a_search_in_progress_pickles_and_resumes_the_same(name):
    strategy = make(name)
    generator, verifier = ScriptedGenerator([TRAP]), ScriptedVerifier([TRAP])
    drive(strategy, generator, verifier, rounds=2)
    copy = pickle.loads(pickle.dumps(strategy))
    answer = run_inprocess([strategy], generator, verifier)[0]
    assert run_inprocess([copy], generator, verifier)[0] == answer
    assert canonical(copy.tree) == canonical(strategy.tree)


def test_stopped_after_some_paths_finished_answers_from_them():
    strategy = make("mcts", num_simulations=1000)
    generator, verifier = ScriptedGenerator([TRAP]), ScriptedVerifier([TRAP])
    while not any(n.is_terminal and n.scores for n in strategy.tree.nodes):
        drive(strategy, generator, verifier, rounds=1)
    strategy.stop("budget")
    answer = strategy.answer()
    assert answer.stop_reason == "budget" and answer.answer is not None
    assert answer.trace[-1] == f"Answer: {answer.answer}"
    assert strategy.num_started < 1000


class ShrinkingGenerator(ScriptedGenerator):
    """At most ``max_texts`` texts per request (none for every ``starve``-th), as a budget shrink gives."""

    def __init__(self, problems, max_texts: int, starve: int = 0):
        super().__init__(problems)
        self.max_texts = max_texts
        self.starve = starve
        self.num_seen = 0

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        out = []
        for request in requests:
            self.num_seen += 1
            keep = 0 if self.starve and self.num_seen % self.starve == 0 else min(request.n, self.max_texts)
            if keep == 0:
                out.append(GenerateResult(request.request_id, [], [], [], 0, 0, 0))
                continue
            shrunk = dataclasses.replace(request, n=keep)
            out += super().generate([shrunk])
        return out


@pytest.mark.parametrize("name", ALL)
def test_fewer_texts_than_asked_for_is_handled(name):
    answer, strategy = solve(name, generator=ShrinkingGenerator([TRAP], max_texts=1))
    assert strategy.done and answer.stop_reason in ("done", "no_answer")
    starved, strategy = solve(name, generator=ShrinkingGenerator([TRAP], max_texts=2, starve=3))
    assert strategy.done and starved.stop_reason in ("done", "no_answer")
    assert all(n.status != NodeStatus.EXPANDING for n in strategy.tree.nodes)


def test_best_of_n_shrunk_to_fewer_samples_uses_what_came_back():
    generator = ShrinkingGenerator([TRAP], max_texts=3)
    answer, strategy = solve("best_of_n", generator=generator, n=10)
    assert len(strategy.leaves) == 3 == generator.num_texts
    nothing, strategy = solve("best_of_n", generator=ShrinkingGenerator([TRAP], max_texts=0))
    assert nothing.answer is None and nothing.stop_reason == "no_answer" and len(strategy.tree) == 1


# -- through the scheduler ------------------------------------------------------------------

def test_strategies_run_side_by_side_through_the_scheduler():
    problems = [dataclasses.replace(TRAP, prompt=f"Q: {name}\n") for name in ALL]
    generator, verifier = ScriptedGenerator(problems), ScriptedVerifier(problems)
    scheduler = Scheduler(BudgetManager(), generator.model_spec(), verifier.model_spec())
    ids = itertools.count()
    for name, problem in zip(ALL, problems):
        cls = get_strategy(name)
        scheduler.add(cls(Tree(name, problem.prompt), TASK, cls.Params.from_dict(SMALL[name]), 0,
                          lambda: next(ids)))
    answers = {a.problem_id: a for a in run_scheduled(scheduler, generator, verifier)}
    assert set(answers) == set(ALL)
    for name, answer in answers.items():
        assert answer.answer == "42" and answer.stop_reason == "done", name
        assert answer.extra["stats"]["flops"] > 0


def test_a_tight_problem_cap_stops_search_with_its_best_so_far():
    generator, verifier = ScriptedGenerator([TRAP]), ScriptedVerifier([TRAP])
    budget = BudgetManager(flops_per_problem=3_000_000)
    scheduler = Scheduler(budget, generator.model_spec(), verifier.model_spec())
    strategy = make("beam", beam_width=4, expansion_factor=4)
    scheduler.add(strategy)
    (answer,) = run_scheduled(scheduler, generator, verifier)
    assert answer.stop_reason == "budget" and answer.trace
    assert budget.spent(strategy.problem_id) <= 3_000_000


@pytest.mark.parametrize("num_affordable", [1, 3, 40])
def test_capped_best_of_n_with_n_1024_scores_every_sample_within_the_cap(num_affordable):
    generator, verifier = ScriptedGenerator([TRAP]), ScriptedVerifier([TRAP])
    probe = Scheduler(BudgetManager(), generator.model_spec(), verifier.model_spec())
    (sample,) = make("best_of_n", n=1024, max_solution_tokens=64).requests()  # at n=1024
    tokens, cost, _, _ = probe._cost(dataclasses.replace(sample, n=1))
    per_sample = cost + probe._score_cost_per_sample(tokens)  # one sample generated and scored, worst case
    cap = num_affordable * per_sample + per_sample // 2
    budget = BudgetManager(flops_per_problem=cap)
    scheduler = Scheduler(budget, generator.model_spec(), verifier.model_spec())
    strategy = make("best_of_n", n=1024, max_solution_tokens=64)
    scheduler.add(strategy)
    (answer,) = run_scheduled(scheduler, generator, verifier)
    assert answer.stop_reason == "done" and answer.answer is not None
    assert len(strategy.leaves) == num_affordable  # the cap, not n, decided how many
    assert all(strategy.tree[leaf].scores for leaf in strategy.leaves)  # every sample scored
    assert budget.spent(strategy.problem_id) <= cap and budget.num_open_reservations == 0
