"""Turning verifier scores and sampled answers into one number or one answer.

Kept apart from the strategies (as search-and-learn does) so that every strategy
ranks paths and votes the same way, and a config can switch the rule by name.

Two families:
- step aggregation: one score for a path from its per-step PRM scores
  (``min`` / ``prod`` / ``last`` / ``mean``);
- votes over the answers extracted from finished paths: plain majority,
  PRM-weighted, or the single best-scored path.

Every tie is broken by first occurrence, so a vote is a function of the order in
which a strategy lists its paths, never of hash order.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

_AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {  # name -> rule
    "min": min,
    "prod": math.prod,
    "last": lambda scores: scores[-1],
    "mean": lambda scores: math.fsum(scores) / len(scores),
}
AGGREGATIONS: tuple[str, ...] = tuple(_AGGREGATORS)

EMPTY_PATH_SCORE = 0.0
"""Score of a path with no step scores: it has no evidence, so it ranks below any scored path."""


def check_aggregation(how: str) -> str:
    """Validate an aggregation name (for config loading).

    Raises:
        ValueError: if ``how`` is not one of ``AGGREGATIONS``.
    """
    if how not in _AGGREGATORS:
        raise ValueError(f"unknown score aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
    return how


def aggregate_scores(scores: Sequence[float], how: str = "min") -> float:
    """One score for a path from its per-step verifier scores.

    Args:
        scores: step scores of the path, root first, each in [0, 1].
        how: ``"min"`` (the weakest step, the usual PRM rule), ``"prod"`` (all steps
            right, if independent), ``"last"`` (the final step's score) or ``"mean"``.

    Returns:
        The aggregated score; ``EMPTY_PATH_SCORE`` (0.0) for an empty ``scores``,
        whatever ``how`` is, so an unscored path never outranks a scored one.

    Raises:
        ValueError: if ``how`` is not a valid aggregation (the message lists them).
    """
    rule = _AGGREGATORS.get(how)
    if rule is None:
        check_aggregation(how)
    if not scores:
        return EMPTY_PATH_SCORE
    return float(rule(scores))


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """The most frequent answer (self-consistency).

    Args:
        answers: one extracted answer per path; None (no answer) is not a vote.

    Returns:
        ``(answer, share)`` where ``share`` is the winner's fraction of the non-None
        answers; ``(None, 0.0)`` if there are none. Ties go to the answer seen first.
    """
    return weighted_vote(answers, [1.0] * len(answers))


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> tuple[str | None, float]:
    """The answer with the largest total weight (PRM-weighted majority).

    Args:
        answers: one extracted answer per path; None is not a vote.
        weights: one non-negative weight per path (e.g. its aggregated PRM score).

    Returns:
        ``(answer, share)`` where ``share`` is the winner's weight over the total
        weight of the non-None answers (0.0 if that total is 0); ``(None, 0.0)`` if
        no path has an answer. Ties go to the answer seen first.

    Raises:
        ValueError: if the lengths differ or a weight is negative or NaN.
    """
    if len(answers) != len(weights):
        raise ValueError(f"weighted_vote needs one weight per answer, got {len(answers)} "
                         f"answers and {len(weights)} weights")
    totals: dict[str, float] = {}  # answer -> summed weight, in first-seen order
    for answer, weight in zip(answers, weights):
        if not weight >= 0.0:
            raise ValueError(f"vote weights must be >= 0, got {weight!r}")
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
    if not totals:
        return None, 0.0
    winner = max(totals, key=totals.__getitem__)  # max keeps the first of equal keys
    total = math.fsum(totals.values())
    return winner, (totals[winner] / total if total > 0.0 else 0.0)


def best_scored(answers: Sequence[str | None], scores: Sequence[float]) -> tuple[str | None, float]:
    """The answer of the highest-scored path that has one (best-of-N with a verifier).

    Args:
        answers: one extracted answer per path; paths without one are skipped.
        scores: one score per path (e.g. from ``aggregate_scores``).

    Returns:
        ``(answer, score)``; ``(None, 0.0)`` if no path has an answer. Ties go to
        the path listed first.

    Raises:
        ValueError: if the lengths differ.
    """
    if len(answers) != len(scores):
        raise ValueError(f"best_scored needs one score per answer, got {len(answers)} "
                         f"answers and {len(scores)} scores")
    best: tuple[str | None, float] = (None, 0.0)
    found = False
    for answer, score in zip(answers, scores):
        if answer is not None and (not found or score > best[1]):
            best, found = (answer, score), True
    return best
