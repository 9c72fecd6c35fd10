"""Exact verifier labels (ponder.models.exact_labels) and the flywheel's exact target."""

import random

import pytest

from ponder.models.exact_labels import can_make_24, exact_step_labels, labelled_paths, synthetic_paths
from ponder.tasks import game24


@pytest.mark.parametrize("values, expected", [
    ((24,), True), ((23,), False), ((4, 6), True), ((5, 5), False), ((3, 8), True),
    ((1, 3, 4, 6), True),  # 6 / (1 - 3/4): needs fractions
    ((1, 1, 1, 1), False), ((3, 3, 8, 8), True),  # 8 / (3 - 8/3)
    ((1, 1, 1, 2), False), ((2, 2, 6), True), ((1, 1, 13), False),
])
def test_can_make_24(values, expected):
    assert can_make_24(values) is expected


def test_a_solution_is_good_at_every_step():
    numbers = (1, 3, 4, 6)
    for sol in game24.solutions(numbers)[:5]:
        assert exact_step_labels(numbers, sol) == [1.0] * len(sol)


def test_dead_ends_wrong_arithmetic_and_wrong_answers_score_zero_from_the_mistake_on():
    numbers = (3, 4, 5, 6)
    assert exact_step_labels(numbers, ["4 - 3 = 1 (left: 1 5 6)", "5 - 1 = 4 (left: 4 6)",
                                       "4 * 6 = 24 (left: 24)", "Answer: (5 - (4 - 3)) * 6 = 24"]) == [1.0] * 4
    # a valid step into a dead end: 1 5 6 -> 6 6 cannot make 24
    assert exact_step_labels(numbers, ["4 - 3 = 1 (left: 1 5 6)", "1 + 5 = 6 (left: 6 6)"]) == [1.0, 0.0]
    # wishful arithmetic, then an honest step: zero from the mistake on
    assert exact_step_labels(numbers, ["4 - 3 = 2 (left: 2 5 6)", "2 * 5 = 10 (left: 6 10)"]) == [0.0, 0.0]
    # bookkeeping: a number lost from the left list
    assert exact_step_labels(numbers, ["4 - 3 = 1 (left: 1 5)"]) == [0.0]
    # an answer line that does not verify after valid steps
    assert exact_step_labels(numbers, ["4 - 3 = 1 (left: 1 5 6)", "5 - 1 = 4 (left: 4 6)",
                                       "4 * 6 = 24 (left: 24)", "Answer: (5 - (4 - 3)) + 6 = 24"])[-1] == 0.0


def test_test_puzzles_are_refused():
    test_numbers = tuple(game24.parse_numbers(game24.puzzles_in_test_split()[0].problem))
    with pytest.raises(AssertionError, match="test puzzle"):
        exact_step_labels(test_numbers, ["Answer: 1 = 24"])
    with pytest.raises(AssertionError, match="test puzzle"):
        synthetic_paths(test_numbers, random.Random(0))


def test_synthetic_paths_show_good_and_bad_states_at_every_depth():
    puzzles = [tuple(game24.parse_numbers(p.problem)) for p in game24.train_puzzles()[:30]]
    paths = labelled_paths(puzzles, random.Random(0))
    assert len({(n, tuple(s)) for n, s, _ in paths}) == len(paths)  # unique
    assert all(len(steps) == len(labels) for _, steps, labels in paths)
    for depth in range(4):
        seen = {labels[depth] for _, _, labels in paths if len(labels) > depth}
        assert seen == {0.0, 1.0}, depth
    for numbers, steps, labels in paths:  # once a path is bad it stays bad
        first_bad = labels.index(0.0) if 0.0 in labels else len(labels)
        assert labels[first_bad:] == [0.0] * (len(labels) - first_bad)
        if first_bad < len(labels):
            assert (not game24.check_step(numbers, steps[:first_bad + 1])
                    or not game24.is_terminal(steps[first_bad]))


def test_flywheel_exact_target_labels_every_expanded_node(tmp_path):
    from test_traces import game24_tree, record_game24

    from ponder.engine.traces import read_traces
    from ponder.models.flywheel import training_paths, with_replay

    train, test = game24.train_puzzles()[:2], game24.puzzles_in_test_split()[:1]
    record_game24(tmp_path / "run", train + test)
    paths, counts = training_paths(read_traces(tmp_path / "run"), target="exact")
    assert counts["test_split"] == len(game24_tree(test[0])) - 1
    assert len(paths) == sum(len(game24_tree(p)) - 1 for p in train)  # every node, finished or not
    by_last = {steps[-1]: labels for numbers, steps, labels in paths if numbers == paths[0][0]}
    assert by_last["Answer: 1 + 1 = 24"] == [1.0, 1.0, 1.0, 0.0]
    assert [len(labels) for labels in by_last.values()].count(1) == 1  # the first step alone too
    others = [tuple(game24.parse_numbers(p.problem)) for p in game24.train_puzzles()[10:13]]
    mixed = with_replay(paths, 8, puzzles=others)
    assert len(mixed) > len(paths) and {n for n, _, _ in mixed} == {n for n, _, _ in paths} | set(others)
