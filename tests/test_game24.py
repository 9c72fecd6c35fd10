"""Game of 24: data splits, solver, exact checker, step checker, answer extraction."""

import random
from fractions import Fraction
from pathlib import Path

import pytest

from ponder.tasks import game24
from ponder.tasks.arithmetic import step_options
from ponder.tasks.base import Problem
from ponder.tasks.expression import parse_expression

PROBLEM = Problem("901", "4 5 6 10")


# --- data and splits ---------------------------------------------------------------

def test_csv_has_1362_puzzles_and_ids_are_rows():
    puzzles = game24.load_puzzles()
    assert len(puzzles) == 1362
    assert puzzles[0].problem == "1 1 4 6" and puzzles[0].problem_id == "0"
    assert puzzles[900].problem == "4 5 6 10" and puzzles[900].problem_id == "900"


def test_test_split_is_rows_900_to_999_and_excluded_from_training():
    test = game24.puzzles_in_test_split()
    assert len(test) == 100 and [p.problem_id for p in test] == [str(i) for i in range(900, 1000)]
    train = game24.train_puzzles()
    train_ids = {int(p.problem_id) for p in train}
    assert not train_ids & set(game24.TEST_SPLIT)
    test_keys = {tuple(sorted(game24.parse_numbers(p.problem))) for p in test}
    assert all(tuple(sorted(game24.parse_numbers(p.problem))) not in test_keys for p in train)
    assert len(train) == 1362 - 100


def test_is_test_puzzle_ignores_order():
    assert game24.is_test_puzzle("10 6 5 4")
    assert game24.is_test_puzzle([4, 5, 6, 10])
    assert not game24.is_test_puzzle("1 1 4 6")


def test_train_split_drops_a_row_whose_multiset_equals_a_test_puzzle(tmp_path):
    rows = ["Rank,Puzzles"] + [f"{i + 1},1 1 1 {i + 1}" for i in range(1000)]
    rows.append("1001,1 1 1 901")  # same multiset as test row 900
    rows.append("1002,2 3 4 1")
    path = tmp_path / "24.csv"
    path.write_text("\n".join(rows) + "\n")
    train = [p.problem for p in game24.train_puzzles(path)]
    assert "1 1 1 901" not in train and "1 1 1 1" in train and "2 3 4 1" in train
    assert len(train) == 900 + 1


def test_packaged_csv_matches_shared_data():
    packaged = Path(game24.__file__).parent / "data" / "24.csv"
    assert packaged.is_file() and (packaged.parent / "LICENSE-tree-of-thought-llm").is_file()
    assert [p.problem for p in game24.load_puzzles(packaged)] == \
           [p.problem for p in game24.load_puzzles()]


def test_env_var_overrides_and_missing_env_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "mine.csv"
    path.write_text("Rank,Puzzles\n1,2 2 6 6\n")
    monkeypatch.setenv(game24.CSV_ENV, str(path))
    assert [p.problem for p in game24.load_puzzles()] == ["2 2 6 6"]
    monkeypatch.setenv(game24.CSV_ENV, str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        game24.load_puzzles()


# --- exact checker -----------------------------------------------------------------

@pytest.mark.parametrize("expr", ["(5 * (10 - 4)) - 6", "5*(10-4)-6", "Answer: (10 - 6) + 4 * 5 = 24",
                                  "4 × 5 + (10 − 6)"])
def test_verify_accepts_correct_answers(expr):
    assert game24.verify(PROBLEM, expr)


@pytest.mark.parametrize("expr", [
    "(5 * (10 - 4)) - 7",      # a number not in the puzzle
    "(5 * (10 - 4)) - 6 + 6 - 6",  # 6 reused
    "5 * (10 - 4) - 6 + 0",    # extra number
    "4 * 6",                   # missing numbers
    "(5 * (10 - 4)) + 6",      # value 36
    "5 * 6 - 6",               # uses an intermediate, not the inputs
    "-(4 - 10) * 5 - 6",       # unary minus is not an operation of the game
    "__import__('os')",        # not arithmetic
    "5 ** 2 - 1",              # power is not allowed
    "",
    None,
])
def test_verify_rejects_wrong_answers(expr):
    assert not game24.verify(PROBLEM, expr)


def test_fractions_are_exact():
    assert game24.verify("1 3 4 6", "6 / (1 - 3/4)")
    assert game24.verify("3 3 8 8", "8 / (3 - 8 / 3)")
    assert not game24.verify("3 3 8 8", "8 / (3 - 8 / 3) + 0 * 1")
    assert parse_expression("1 / 3 + 1 / 3 + 1 / 3").value == 1
    assert parse_expression("1 / (2 - 2)").value is None
    assert not game24.verify("1 2 2 24", "24 / (2 - 2) * 1")


def test_parser_rejects_malformed_text():
    for text in ["(1 + 2", "1 + 2)", "1 +", "1 2", "1.5 * 16", "a + 1", "((" * 300 + "1"]:
        with pytest.raises(ValueError):
            parse_expression(text)


# --- steps -------------------------------------------------------------------------

def test_check_step_accepts_good_steps():
    steps = ["10 - 4 = 6 (left: 5 6 6)", "5 * 6 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)",
             "Answer: (5 * (10 - 4)) - 6 = 24"]
    for k in range(1, len(steps) + 1):
        assert game24.check_step(PROBLEM, steps[:k]), steps[:k]
    assert game24.check_step("1 3 4 6", ["3 / 4 = 3/4 (left: 3/4 1 6)", "1 - 3/4 = 1/4 (left: 1/4 6)"])
    assert game24.check_step(PROBLEM, ["4 - 10 = -6 (left: -6 5 6)"])  # right, if not canonical


@pytest.mark.parametrize("steps", [
    ["10 - 4 = 7 (left: 5 6 7)"],               # bad arithmetic
    ["10 - 4 = 6 (left: 5 6)"],                 # a number dropped
    ["10 - 4 = 6 (left: 4 5 6 6)"],             # an operand kept
    ["10 - 3 = 7 (left: 5 6 7)"],               # operand not available
    ["10 - 4 = 6 (left: 5 6 6)", "6 * 6 = 36 (left: 5 36)", "5 * 5 = 25 (left: 25 36)"],
    ["10 - 4 = 6 (left: 5 6 6)", "Answer: 5 * 6 - 6 = 24"],  # Answer must use the inputs
    ["10 / 4 = 2.5 (left: 2.5 5 6)"],           # decimals are not the format
    ["garbage", "5 * 6 = 30 (left: 6 30)"],
    [],
])
def test_check_step_rejects_bad_steps(steps):
    assert not game24.check_step(PROBLEM, steps)


def test_extract_answer_and_terminal():
    steps = ["10 - 4 = 6 (left: 5 6 6)", "Answer:  (5*(10 -4))-6 = 24"]
    assert game24.extract_answer(steps) == "(5 * (10 - 4)) - 6"
    assert game24.extract_answer(steps[:1]) is None
    assert game24.is_terminal("Answer: 1 + 2 = 24") and not game24.is_terminal(steps[0])


# --- solver ------------------------------------------------------------------------

def test_every_solution_of_sampled_puzzles_verifies_and_checks():
    rng = random.Random(0)
    puzzles = rng.sample(game24.train_puzzles(), 40) + [Problem("x", "1 3 4 6")]
    for problem in puzzles:
        sols = game24.solutions(problem.problem)
        assert sols, problem
        assert len({tuple(s) for s in sols}) == len(sols)  # distinct
        for steps in sols:
            assert len(steps) == game24.Game24Task.max_steps
            assert game24.verify(problem, game24.extract_answer(steps))
            assert all(game24.check_step(problem, steps[:k]) for k in range(1, 5))


def test_solution_format_matches_tot():
    sols = game24.solutions("4 5 6 10")
    assert ["10 - 4 = 6 (left: 5 6 6)", "5 * 6 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)",
            "Answer: (5 * (10 - 4)) - 6 = 24"] in sols
    assert game24.solutions("1 3 4 6")[0][-1] == "Answer: 6 / (1 - (3 / 4)) = 24"
    assert game24.solutions("1 1 1 1") == []


def test_step_options_and_random_traces_are_valid():
    state = game24.initial_state("4 5 6 10")
    options = step_options(state)
    assert len({o.text for o in options}) == len(options) == 6 * 5
    first = next(o for o in options if o.text == "10 - 4 = 6 (left: 5 6 6)")
    assert first.left == (5, 6, 6) and first.exprs == ("5", "6", "10 - 4")
    assert all(isinstance(v, (int, Fraction)) for o in options for v in o.left)
    rng = random.Random(1)
    for _ in range(50):
        steps, reached = game24.random_trace("4 5 6 10", rng)
        assert reached == game24.is_terminal(steps[-1])
        assert all(game24.check_step(PROBLEM, steps[:k]) for k in range(1, len(steps) + 1))
    partial = game24.random_valid_steps("4 5 6 10", rng, num_steps=2)
    assert len(partial) == 2 and game24.check_step(PROBLEM, partial)


def test_task_interface():
    task = game24.Game24Task()
    assert task.name == "game24" and task.step_delimiter == "\n" and task.max_steps == 4
    assert task.prompt(PROBLEM) == "Input: 4 5 6 10\n"
    assert task.verify(PROBLEM, "(5 * (10 - 4)) - 6") is True
    assert task.parse_problem({"id": "a", "numbers": [10, 4, 5, 6]}, 0).problem == "10 4 5 6"
    assert task.parse_problem({"problem": "4 5 6 10"}, 7).problem_id == "7"


def test_a_zero_denominator_in_a_step_is_a_wrong_step_not_a_crash():
    assert game24.check_step([5, 5, 4, 6], ["6 / 4 = 60/0 (left: 5 5 60/0)"]) is False
    assert game24.check_step([5, 5, 4, 6], ["60/0 * 4 = 24 (left: 24)"]) is False
