"""countdown, math and gsm8k answers, and the task registry with plugins."""

import textwrap

import pytest

from ponder.tasks import Problem, Task, get_task, register_task, task_names
from ponder.tasks import countdown, gsm8k
from ponder.tasks.latex_answer import is_equiv, last_boxed, normalize
from ponder.tasks.math_task import MathTask, extract_boxed_answer


# --- countdown ---------------------------------------------------------------------

def test_countdown_generation_is_deterministic_and_solvable():
    first = countdown.generate(20, seed=3)
    assert first == countdown.generate(20, seed=3)
    assert first != countdown.generate(20, seed=4)
    for problem in first:
        numbers, target = countdown.parse_instance(problem)
        assert len(numbers) == 4 and 10 <= target <= 100 and target not in numbers
        sols = countdown.solutions(numbers, target, limit=5)
        assert sols, problem
        assert all(countdown.verify(problem, s[-1]) for s in sols)
        assert all(countdown.check_step(problem, s[:k]) for s in sols for k in range(1, len(s) + 1))
    five = countdown.generate(3, seed=0, num_numbers=5)
    assert all(len(countdown.parse_instance(p)[0]) == 5 for p in five)
    with pytest.raises(ValueError, match="num_numbers"):
        countdown.generate(1, seed=0, num_numbers=9)


def test_countdown_uses_numbers_at_most_once():
    problem = Problem("c", countdown.format_problem([3, 7, 25, 50], 125))
    assert countdown.verify(problem, "25 * 7 - 50")          # 3 unused: allowed
    assert countdown.verify(problem, "(7 * 25) - 50 + 3 - 3") is False  # 3 used twice
    assert not countdown.verify(problem, "25 * 5")           # 5 is not an input
    assert not countdown.verify(problem, "25 * 7 - 49")
    assert countdown.check_step(problem, ["7 * 25 = 175 (left: 3 50 175)",
                                          "175 - 50 = 125 (left: 3 125)"])
    assert not countdown.check_step(problem, ["7 * 25 = 165 (left: 3 50 165)"])
    task = get_task("countdown")
    steps = ["7 * 25 = 175 (left: 3 50 175)", "Answer: (7*25) - 50 = 125"]
    assert task.is_terminal(steps[-1]) and task.extract_answer(steps) == "(7 * 25) - 50"
    assert task.prompt(problem) == "Input: 3 7 25 50\nTarget: 125\n"
    record = task.parse_problem({"numbers": [50, 3, 7, 25], "target": 125}, 0)
    assert countdown.parse_instance(record) == ([50, 3, 7, 25], 125)


# --- math --------------------------------------------------------------------------

@pytest.mark.parametrize("a,b", [
    ("\\frac{1}{2}", "0.5"), ("\\dfrac{3}{4}", "\\frac34"), ("\\left(1, 2\\right)", "(1,2)"),
    ("5\\text{ cm}", "5"), ("10\\%", "10"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"),
    ("2\\pi", "\\pi \\cdot 2"), ("x^2+2x+1", "(x+1)^2"), ("x = 5", "5"), ("90^\\circ", "90"),
    ("5.", "5"), ("\\sqrt[3]{8}", "2"), ("3, 1", "1,3"), (".5", "\\tfrac12"), ("1,000", "1000"),
    ("\\$12.50", "12.5"),
])
def test_math_equivalent_answers(a, b):
    assert is_equiv(a, b)


@pytest.mark.parametrize("a,b", [
    ("\\frac{1}{2}", "0.4999"), ("[1,2)", "(1,2)"), ("(1,2)", "(2,1)"), ("x+1", "y+1"),
    ("9^{9^9}", "2"), ("2m", "2"), ("\\unknowncommand{3}", "3"), ("__import__('os')", "0"), (None, "1"),
])
def test_math_different_answers(a, b):
    assert not is_equiv(a, b)


def test_boxed_extraction_keeps_nested_braces():
    assert last_boxed("so $\\boxed{\\dfrac{3}{4}}$.") == "\\dfrac{3}{4}"
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{\\sqrt{3}}{2}}") == "\\frac{\\sqrt{3}}{2}"
    assert last_boxed("\\boxed 7") == "7" and last_boxed("\\boxed{1") is None
    assert extract_boxed_answer("The answer is $\\boxed{\\dfrac{3}{4}}$.") == "\\frac{3}{4}"
    assert normalize("\\left( 3, \\!4 \\right).") == "(3,4)"


def test_math_task_interface():
    task = get_task("math")
    assert isinstance(task, MathTask) and task.step_delimiter == "\n\n"
    steps = ["Add the fractions.", "We get $\\boxed{\\dfrac{3}{4}}$."]
    assert not task.is_terminal(steps[0]) and task.is_terminal(steps[1])
    answer = task.extract_answer(steps)
    assert task.verify(Problem("m", "1/2+1/4", "0.75"), answer) is True
    assert task.verify(Problem("m", "1/2+1/4", "0.7"), answer) is False
    assert task.verify(Problem("m", "1/2+1/4"), answer) is None
    record = {"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$"}
    assert task.parse_problem(record, 3).reference == "\\frac{1}{2}"


# --- gsm8k -------------------------------------------------------------------------

@pytest.mark.parametrize("text,number", [
    ("So 48 + 24 = 72 clips.\n#### 72", "72"), ("#### 1,234", "1234"),
    ("She pays $3.50 each, 2 times. The answer is $7.00.", "7"),
    ("It is 12, then 5 more: 17", "17"), ("#### -2", "-2"), ("no number here", None),
    ("Final answer: 0.250 dollars", "0.25"),
])
def test_gsm8k_extraction(text, number):
    assert gsm8k.extract_number(text) == number


def test_gsm8k_numeric_equivalence_and_task():
    assert gsm8k.numbers_equal("1,234", "1234.00") and gsm8k.numbers_equal("$5", "5")
    assert not gsm8k.numbers_equal("5", "5.01") and not gsm8k.numbers_equal(None, "5")
    task = get_task("gsm8k")
    steps = ["48 / 2 = 24 in May.", "48 + 24 = 72.", "#### 72"]
    assert task.is_terminal(steps[-1]) and not task.is_terminal(steps[0])
    assert task.extract_answer(steps) == "72"
    assert task.verify(Problem("g", "q", "72"), "72.0") is True
    assert task.verify(Problem("g", "q", "72"), "71") is False


# --- registry ----------------------------------------------------------------------

def test_registry_names_and_unknown_name_lists_valid_ones():
    assert {"game24", "countdown", "math", "gsm8k"} <= set(task_names())
    assert get_task("game24").name == "game24"
    assert get_task("countdown", num_numbers=5).max_steps == 5
    with pytest.raises(ValueError, match="unknown task 'gam24'.*countdown, game24, gsm8k, math"):
        get_task("gam24")


PLUGIN = textwrap.dedent('''
    from ponder.tasks.base import Task

    class EchoTask(Task):
        name = "echo"
        def prompt(self, problem): return problem.problem
        def is_terminal(self, step): return step.startswith("END")
        def extract_answer(self, steps): return steps[-1] if steps else None

    class DuckTask:  # no Task base class, but has the protocol
        step_delimiter = "\\n"
        max_steps = 3
        def prompt(self, problem): return ""
        def is_terminal(self, step): return True
        def extract_answer(self, steps): return None

    class NotATask:
        max_steps = 3
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_tasks.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_plugin_tasks"


def test_plugin_by_module_and_class(plugin_module):
    task = get_task(f"{plugin_module}:EchoTask")
    assert isinstance(task, Task) and task.is_terminal("END") and task.extract_answer(["a"]) == "a"
    duck = get_task(f"{plugin_module}:DuckTask")
    assert duck.max_steps == 3
    with pytest.raises(ValueError, match="NotATask.*step_delimiter, prompt, is_terminal"):
        get_task(f"{plugin_module}:NotATask")
    with pytest.raises(ValueError, match="has no 'Missing'"):
        get_task(f"{plugin_module}:Missing")
    with pytest.raises(ValueError, match="cannot import task plugin module 'no_such_mod_xyz'"):
        get_task("no_such_mod_xyz:Task")


def test_register_task(plugin_module):
    import importlib
    module = importlib.import_module(plugin_module)
    register_task("echo-test", module.EchoTask)
    assert "echo-test" in task_names() and get_task("echo-test").name == "echo"
    with pytest.raises(ValueError, match="built in"):
        register_task("game24", module.EchoTask)
    with pytest.raises(ValueError, match="not a task"):
        register_task("bad", module.NotATask)


def test_math_comparison_timeout_falls_back_to_string_equality(monkeypatch):
    import time
    from ponder.tasks import latex_answer

    def slow(a, b):
        time.sleep(5)
        return True

    monkeypatch.setattr(latex_answer, "_numerically_equal", slow)
    monkeypatch.setattr(latex_answer, "TIMEOUT_S", 0.2)
    start = time.monotonic()
    assert not is_equiv("\\frac{1}{2}", "0.5")  # would be True without the timeout
    assert is_equiv("\\dfrac{1}{2}", "\\frac12")  # equal after normalization: no sympy needed
    assert time.monotonic() - start < 2
