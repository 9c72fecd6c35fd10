"""search.step_check: the task's exact step checker beside the learned verifier."""

from __future__ import annotations

from ponder.search.messages import ScoreRequest, ScoreResult
from ponder.search.step_check import checked_scores
from ponder.tasks import game24

NUMBERS = (1, 1, 4, 6)


def game24_check(problem_id, steps):
    assert problem_id == "p"
    return game24.check_step(NUMBERS, list(steps))


def test_scores_drop_to_zero_from_the_first_wrong_step_only():
    good = game24.solutions(NUMBERS)[0]
    bent = good[:1] + ["4 + 6 = 24 (left: 1 24)"] + good[2:]  # wrong arithmetic at step 2
    request = ScoreRequest(7, "Input: 1 1 4 6\n", [good, bent])
    verifier_says = ScoreResult(7, [[0.9] * len(good), [0.8] * len(bent)], 10, 5)
    out = checked_scores("p", request, verifier_says, game24_check)
    assert out.step_scores[0] == [0.9] * len(good)  # a right path keeps the verifier's scores
    assert out.step_scores[1] == [0.8] + [0.0] * (len(bent) - 1)
    assert (out.request_id, out.num_prompt_tokens, out.num_cached_prompt_tokens) == (7, 10, 5)
    assert verifier_says.step_scores[1] == [0.8] * len(bent)  # the input is not changed


def test_steps_the_checker_cannot_judge_keep_their_scores():
    request = ScoreRequest(1, "q", [["a", "b"]])
    out = checked_scores("p", request, ScoreResult(1, [[0.3, 0.4]], 0, 0), lambda pid, steps: None)
    assert out.step_scores == [[0.3, 0.4]]


def _best_of_two(step_check):
    """best_of_n (n=2, best) on one game24 tree: a bent path the verifier loves, a right one it doubts."""
    from itertools import count

    from ponder.search import get_strategy
    from ponder.search.budget import BudgetManager
    from ponder.search.flops import ModelSpec
    from ponder.search.messages import GenerateResult
    from ponder.search.scheduler import Scheduler
    from ponder.search.tree import Tree
    from ponder.tasks.base import Problem
    from ponder.tasks.game24 import Game24Task

    task = Game24Task()
    problem = Problem("p", "1 1 4 6")
    spec = ModelSpec("m", num_params=1000, num_layers=1, d_model=8)
    check = (lambda pid, steps: task.check_step(problem, list(steps))) if step_check else None
    scheduler = Scheduler(BudgetManager(), spec, spec, step_check=check)
    cls = get_strategy("best_of_n")
    params = cls.Params.from_dict({"n": 2, "selection": "best", "agg": "min"})
    ids = count()
    scheduler.add(cls(Tree("p", task.prompt(problem)), task, params, 0, lambda: next(ids)))
    right = game24.solutions(NUMBERS)[0]
    bent = ["4 + 6 = 24 (left: 1 1 24)", "1 * 1 = 1 (left: 1 24)", "1 * 24 = 24 (left: 24)",
            "Answer: (1 * 1) * (4 + 6) = 24"]
    gen = scheduler.schedule().generate_batches[0][0]
    scheduler.update([GenerateResult(gen.request_id, ["\n".join(bent) + "\n", "\n".join(right) + "\n"],
                                     [[0], [0]], [0.0, 0.0], 5, 0, 2)])
    score = scheduler.schedule().score_batches[0][0]
    loved = [[0.95] * len(p) if p[0] == bent[0] else [0.6] * len(p) for p in score.paths]
    scheduler.update([ScoreResult(score.request_id, loved, 10, 0)])
    scheduler.schedule()
    (answer,) = scheduler.pop_finished()
    return answer.answer


def test_the_checker_overrules_a_verifier_that_loves_a_wrong_path():
    right_answer = game24.extract_answer(game24.solutions(NUMBERS)[0])
    assert _best_of_two(step_check=False) != right_answer  # the verifier alone picks the bent path
    assert _best_of_two(step_check=True) == right_answer
