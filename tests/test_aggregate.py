"""Step-score aggregation and answer votes."""

import math

import pytest

from ponder.search.aggregate import (AGGREGATIONS, EMPTY_PATH_SCORE, aggregate_scores, best_scored,
                                     check_aggregation, majority_vote, weighted_vote)


@pytest.mark.parametrize("how, expected", [
    ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("last", 0.5), ("mean", (0.9 + 0.2 + 0.5) / 3),
])
def test_aggregate_scores(how, expected):
    assert math.isclose(aggregate_scores([0.9, 0.2, 0.5], how), expected)


def test_aggregate_single_step_is_that_step():
    for how in AGGREGATIONS:
        assert aggregate_scores([0.7], how) == pytest.approx(0.7)


def test_aggregate_empty_path_ranks_lowest():
    for how in AGGREGATIONS:
        assert aggregate_scores([], how) == EMPTY_PATH_SCORE == 0.0
        assert aggregate_scores([], how) < aggregate_scores([0.01], how)


def test_aggregate_unknown_rule_names_valid_ones():
    with pytest.raises(ValueError, match=r"'max'.*min, prod, last, mean"):
        aggregate_scores([0.5], "max")
    with pytest.raises(ValueError, match="'max'"):
        aggregate_scores([], "max")  # validated even with nothing to aggregate
    assert check_aggregation("prod") == "prod"


def test_majority_vote_ignores_none_and_reports_share():
    answer, share = majority_vote(["3", None, "4", "3", None, "4", "3"])
    assert answer == "3"
    assert share == pytest.approx(3 / 5)


def test_majority_vote_tie_goes_to_first_seen():
    assert majority_vote(["b", "a", "a", "b"]) == ("b", 0.5)
    assert majority_vote(["a", "b", "b", "a"]) == ("a", 0.5)


def test_majority_vote_without_answers():
    assert majority_vote([]) == (None, 0.0)
    assert majority_vote([None, None]) == (None, 0.0)


def test_weighted_vote_sums_weights_per_answer():
    # "x" has more votes, "y" more verifier weight.
    answers = ["x", "y", "x", "x", None]
    weights = [0.1, 0.9, 0.1, 0.1, 5.0]
    answer, share = weighted_vote(answers, weights)
    assert answer == "y"
    assert share == pytest.approx(0.9 / 1.2)
    assert majority_vote(answers)[0] == "x"


def test_weighted_vote_ties_and_zero_weights():
    assert weighted_vote(["a", "b"], [0.5, 0.5]) == ("a", 0.5)
    assert weighted_vote(["a", "b"], [0.0, 0.0]) == ("a", 0.0)


def test_weighted_vote_rejects_bad_input():
    with pytest.raises(ValueError, match="one weight per answer"):
        weighted_vote(["a"], [0.1, 0.2])
    with pytest.raises(ValueError, match="-0.5"):
        weighted_vote(["a", "b"], [0.1, -0.5])
    with pytest.raises(ValueError, match="nan"):
        weighted_vote(["a"], [float("nan")])


def test_best_scored_skips_paths_without_answer():
    assert best_scored(["a", None, "b", "c"], [0.3, 0.99, 0.8, 0.8]) == ("b", 0.8)
    assert best_scored([None, None], [0.5, 0.6]) == (None, 0.0)
    assert best_scored(["a"], [0.0]) == ("a", 0.0)
    with pytest.raises(ValueError, match="one score per answer"):
        best_scored(["a"], [])
