"""Trace recording and export: labels of finished and partial paths, JSONL and parquet that
pandas (and ``datasets``, where installed) load, duplicates after a resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import inprocess_config, scripted_job

from ponder.engine.traces import (ROW_SCHEMA, TraceRecorder, export_traces, node_labels,
                                   read_traces, record_rows, tree_record)
from ponder.search.scripted import (ScriptedGenerator, ScriptedProblem, ScriptedTask,
                                    ScriptedVerifier, run_inprocess)
from ponder.search.strategies import get_strategy
from ponder.search.tree import NodeStatus, Tree

TASK = ScriptedTask()
PROBLEM = ScriptedProblem("Q: traces\n", answer="42", num_steps=3, p_correct=0.5)


def hand_tree() -> Tree:
    """root -> a -> (a1: Answer 42 right, a2: Answer 7 wrong); root -> b -> b1 (open); root -> c: Answer 7."""
    tree = Tree("t", "Q\n")
    a = tree.add_child(0, "a")
    for text, answer in (("Answer: 42", "42"), ("Answer: 7", "7")):
        leaf = tree.add_child(a.node_id, text)
        leaf.status, leaf.answer = NodeStatus.TERMINAL, answer
    b = tree.add_child(0, "b")
    tree.add_child(b.node_id, "b1").scores = [0.3, 0.8]
    c = tree.add_child(0, "Answer: 7")
    c.status, c.answer = NodeStatus.TERMINAL, "7"
    return tree


def verify_42(answer):
    return None if answer == "unknown" else answer == "42"


def test_labels_of_finished_and_partial_paths():
    record = tree_record(hand_tree(), verify_42, problem="Q", model="g", verifier="v", strategy="s")
    correct, rates = node_labels(record)
    # ids: 0 root, 1 a, 2 a1 (right), 3 a2 (wrong), 4 b, 5 b1 (open), 6 c (wrong)
    assert correct == [True, True, True, False, None, None, False]
    assert rates == [1 / 3, 1 / 2, 1.0, 0.0, None, None, 0.0]


def test_unknown_verdicts_leave_labels_null():
    tree = Tree("u", "Q\n")
    leaf = tree.add_child(tree.add_child(0, "x").node_id, "Answer: ?")
    leaf.status, leaf.answer = NodeStatus.TERMINAL, "unknown"
    record = tree_record(tree, verify_42, problem="Q", model="g", verifier="v", strategy="s")
    assert node_labels(record) == ([None, None, None], [None, None, None])


def test_rows_have_prefix_step_depth_and_score():
    record = tree_record(hand_tree(), verify_42, problem="Q", model="g", verifier="v", strategy="s")
    rows = list(record_rows(record, run="r"))
    assert len(rows) == 6 and set(rows[0]) == set(ROW_SCHEMA)
    b1 = rows[4]
    assert (b1["prefix"], b1["step"], b1["depth"], b1["step_score"]) == ("Q\nb\n", "b1", 2, 0.8)
    assert (b1["correct"], b1["terminal"], b1["model"], b1["strategy"]) == (None, False, "g", "s")
    a1 = rows[1]
    assert (a1["prefix"], a1["correct"], a1["answer"], a1["terminal"]) == ("Q\na\n", True, "42", True)


def solved_tree(name="beam", **params) -> Tree:
    cls = get_strategy(name)
    ids = iter(range(10_000))
    strategy = cls(Tree("p7", PROBLEM.prompt), TASK, cls.Params.from_dict(params), 1, ids.__next__)
    run_inprocess([strategy], ScriptedGenerator([PROBLEM]), ScriptedVerifier([PROBLEM]))
    return strategy.tree


def record_run(run_dir, trees) -> None:
    recorder = TraceRecorder(run_dir, model="scripted-generator", verifier="scripted-verifier",
                             strategy="beam")
    for tree in trees:
        recorder.record(tree, "Q: traces", lambda answer: answer == PROBLEM.answer)
    recorder.close()


def test_export_writes_jsonl_and_parquet_that_pandas_loads(tmp_path):
    tree = solved_tree(beam_width=2, expansion_factor=3)
    record_run(tmp_path / "runs" / "one", [tree])
    info = export_traces([tmp_path / "runs"], tmp_path / "out")
    assert info["rows"] == len(tree) - 1 and info["problems"] == 1
    from_json = pd.read_json(tmp_path / "out" / "traces.jsonl", lines=True)
    from_parquet = pd.read_parquet(tmp_path / "out" / "traces.parquet")
    assert list(from_parquet.columns) == list(ROW_SCHEMA)
    assert len(from_json) == len(from_parquet) == len(tree) - 1
    terminals = from_parquet[from_parquet["terminal"]]
    assert len(terminals) > 0
    for _, row in terminals.iterrows():  # finished paths carry the task's verdict
        assert bool(row["correct"]) == (row["answer"] == PROBLEM.answer)
    scored = from_parquet["step_score"].notna()
    assert scored.any()
    for _, row in from_parquet.iterrows():  # each prefix is the prompt plus the path's earlier steps
        node = tree[int(row["node_id"])]
        assert row["prefix"] + row["step"] + "\n" == tree.prefix(node.node_id)
        assert row["depth"] == node.depth


@pytest.mark.parametrize("strategy, params", [("beam", {"beam_width": 2, "expansion_factor": 2}),
                                              ("mcts", {"num_simulations": 8})])
def test_a_solve_records_every_expanded_node_of_every_problem(tmp_path, strategy, params):
    from ponder.engine.engine import run_inprocess as run_job_inprocess
    from ponder.engine.rundir import read_results

    task, problems, gen, ver = scripted_job(num_problems=4, p_correct=0.5)
    config = inprocess_config(strategy, params)
    run_job_inprocess(config, problems, tmp_path / "run", gen, ver, task=task)
    results = {r["id"]: r for r in read_results(tmp_path / "run")}
    info = export_traces([tmp_path / "run"], tmp_path / "out")
    rows = read_traces(tmp_path / "out" / "traces.parquet")
    assert info["problems"] == len(problems) and info["rows"] == len(rows)
    for problem in problems:
        group = [r for r in rows if r["problem_id"] == problem.problem_id]
        result = results[problem.problem_id]
        assert sorted(r["node_id"] for r in group) == list(range(1, result["num_nodes"]))  # all but root
        assert {(r["final_answer"], r["final_correct"]) for r in group} == {(result["answer"],
                                                                            result["correct"])}
        for row in group:
            if row["terminal"]:
                assert row["correct"] == task.verify(problem, row["answer"])
        assert all(r["depth"] >= 1 for r in group) and any(r["step_score"] is not None for r in group)
    assert {r["model"] for r in rows} == {gen.model_spec().name}
    assert {r["strategy"] for r in rows} == {strategy}


def test_a_problem_recorded_twice_after_a_resume_is_exported_once(tmp_path):
    first, second = Tree("p7", PROBLEM.prompt), solved_tree(beam_width=2, expansion_factor=2)
    first.add_child(0, "half a search")
    record_run(tmp_path / "run", [first, second])
    with open(tmp_path / "run" / "trees.jsonl", "a") as f:
        f.write('{"problem_id": "torn')  # the crash mid-write
    rows = read_traces(tmp_path / "run")
    assert len(rows) == len(second) - 1
    assert all(r["step"] != "half a search" for r in rows)


def test_read_traces_reads_every_form(tmp_path):
    record_run(tmp_path / "run", [solved_tree(beam_width=2, expansion_factor=2)])
    export_traces([tmp_path / "run"], tmp_path / "out")
    from_trees = read_traces(tmp_path / "run")
    assert read_traces(tmp_path / "out") == from_trees  # the folder: parquet first
    assert read_traces(tmp_path / "out" / "traces.jsonl") == from_trees
    with pytest.raises(FileNotFoundError, match="no traces.parquet, traces.jsonl or trees.jsonl"):
        (tmp_path / "out2").mkdir()
        read_traces(tmp_path / "out2")


def test_export_without_trees_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `ponder solve` first"):
        export_traces([tmp_path], tmp_path / "out")


def test_huggingface_datasets_loads_the_export(tmp_path):
    datasets = pytest.importorskip("datasets")
    record_run(tmp_path / "run", [solved_tree(beam_width=2, expansion_factor=2)])
    info = export_traces([tmp_path / "run"], tmp_path / "out")
    for kind in ("json", "parquet"):
        data = datasets.load_dataset(kind, data_files=info["jsonl" if kind == "json" else "parquet"],
                                     split="train", cache_dir=str(tmp_path / "hf_cache"))
        assert data.num_rows == info["rows"]
        assert {"prefix", "step", "correct", "step_score"} <= set(data.column_names)


def test_rows_are_json_serialisable_with_nulls():
    record = tree_record(hand_tree(), verify_42, problem="Q", model="g", verifier="v", strategy="s")
    for row in record_rows(record):
        assert json.loads(json.dumps(row)) == row


# -- the flywheel: traces -> verifier fine-tuning ------------------------------------------

def game24_tree(problem, right: bool = True) -> Tree:
    """A search tree of one Game-of-24 puzzle: a right solution, and a wrong answer beside it."""
    from ponder.tasks import game24

    task = game24.Game24Task()
    steps = game24.solutions(problem.problem)[0]
    tree = Tree(problem.problem_id, task.prompt(problem))
    leaf = tree.add_chain(0, steps)
    leaf.status, leaf.answer = NodeStatus.TERMINAL, task.extract_answer(steps)
    wrong = tree.add_child(leaf.parent_id, "Answer: 1 + 1 = 24")
    wrong.status, wrong.answer = NodeStatus.TERMINAL, task.extract_answer([wrong.text])
    return tree


def record_game24(run_dir, problems) -> None:
    from ponder.tasks import game24

    task = game24.Game24Task()
    recorder = TraceRecorder(run_dir, model="embedded-generator", verifier="embedded-prm",
                             strategy="beam")
    for problem in problems:
        recorder.record(game24_tree(problem), problem.problem,
                        lambda answer, p=problem: task.verify(p, answer))
    recorder.close()


def test_flywheel_paths_skip_test_puzzles_and_label_steps(tmp_path):
    from ponder.models.flywheel import training_paths
    from ponder.tasks import game24

    train, test = game24.train_puzzles()[:2], game24.puzzles_in_test_split()[:1]
    record_game24(tmp_path / "run", train + test)
    rows = read_traces(tmp_path / "run")
    paths, counts = training_paths(rows)
    assert counts["test_split"] == len(game24_tree(test[0])) - 1  # every row of the test puzzle
    assert not any(game24.is_test_puzzle(numbers) for numbers, _, _ in paths)
    assert {numbers for numbers, _, _ in paths} == {tuple(game24.parse_numbers(p.problem)) for p in train}
    by_last = {steps[-1]: targets for _, steps, targets in paths if _ == paths[0][0]}
    right = [t for s, t in by_last.items() if s != "Answer: 1 + 1 = 24"][0]
    assert right == [1.0, 1.0, 1.0, 1.0]
    assert by_last["Answer: 1 + 1 = 24"] == [1.0, 1.0, 1.0, 0.0]  # the prefix still led somewhere right
    soft, _ = training_paths(rows, target="success_rate")
    assert sorted(t[-2] for _, s, t in soft if s[-1] == "Answer: 1 + 1 = 24") == [0.5, 0.5]


def test_flywheel_refuses_traces_of_test_puzzles_only(tmp_path, capsys):
    import argparse

    from ponder.engine.traces import read_traces
    from ponder.models import flywheel
    from ponder.tasks import game24

    record_game24(tmp_path / "run", game24.puzzles_in_test_split()[:2])
    parser = argparse.ArgumentParser()
    flywheel.add_arguments(parser)
    args = parser.parse_args(["--traces", str(tmp_path / "run"), "--out", str(tmp_path / "w")])
    with pytest.raises(ValueError, match="no verified finished path of a train puzzle"):
        flywheel.run(args, read_traces(args.traces))
    out = capsys.readouterr().out
    assert "skipped" in out and "rows of test puzzles (900-999" in out
    assert not (tmp_path / "w").exists()


def tiny_weights(directory):
    """A 1-layer generator and its verifier, saved as a weights directory."""
    import torch

    from ponder.models import checkpoint
    from ponder.models.gpt import GPT, GPTConfig
    from ponder.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer
    from ponder.models.verifier import ProcessRewardModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = CharTokenizer(DEFAULT_ALPHABET)
    generator = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    checkpoint.save_model(generator, tokenizer, directory, checkpoint.GENERATOR_NAME)
    checkpoint.save_model(ProcessRewardModel.from_generator(generator), tokenizer, directory,
                          checkpoint.VERIFIER_NAME, {"steps": 1})
    return directory


def test_flywheel_fine_tunes_a_verifier_and_keeps_the_weights_dir_complete(tmp_path):
    import torch

    from ponder.models import checkpoint
    from ponder.models.flywheel import fine_tune, training_paths
    from ponder.tasks import game24

    start = tiny_weights(tmp_path / "start")
    record_game24(tmp_path / "run", game24.train_puzzles()[:3])
    paths, _ = training_paths(read_traces(tmp_path / "run"))
    fine_tune(paths, start, tmp_path / "out", steps=3, batch_size=4, lr=1e-2)
    before, _ = checkpoint.load_verifier(start)
    after, _ = checkpoint.load_verifier(tmp_path / "out")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                      after.state_dict().values()))
    checkpoint.load_generator(tmp_path / "out")  # copied alongside
    info = checkpoint.read_meta(tmp_path / "out", checkpoint.VERIFIER_NAME)["info"]
    assert info["steps"] == 1 and info["flywheel"]["steps"] == 3


# -- the commands ------------------------------------------------------------------------

def _command_args(argv):
    import argparse

    from ponder.commands import add_commands

    parser = argparse.ArgumentParser(prog="ponder")
    add_commands(parser.add_subparsers(dest="command"), argv[0])
    return parser.parse_args(argv)


def test_export_traces_command(tmp_path, capsys):
    from ponder.commands import run

    record_run(tmp_path / "runs" / "a", [solved_tree(beam_width=2, expansion_factor=2)])
    record_run(tmp_path / "runs" / "b", [solved_tree(beam_width=2, expansion_factor=3)])
    assert run(_command_args(["export-traces", str(tmp_path / "runs"), "--out", str(tmp_path / "x")])) == 0
    out = capsys.readouterr().out
    assert "rows from 2 trees" in out and (tmp_path / "x" / "traces.parquet").exists()
    runs = set(pd.read_parquet(tmp_path / "x" / "traces.parquet")["run"])
    assert runs == {str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")}


def test_train_verifier_command_refuses_test_split_traces(tmp_path):
    from ponder.commands import run
    from ponder.tasks import game24

    record_game24(tmp_path / "run", game24.puzzles_in_test_split()[:1])
    args = _command_args(["train-verifier", "--traces", str(tmp_path / "run"), "--out", str(tmp_path / "w")])
    with pytest.raises(ValueError, match="no verified finished path of a train puzzle"):
        run(args)


def test_train_verifier_command_retrains_on_exported_traces(tmp_path, capsys):
    import torch

    from ponder.commands import run
    from ponder.models import checkpoint
    from ponder.tasks import game24

    start = tiny_weights(tmp_path / "start")
    record_game24(tmp_path / "run", game24.train_puzzles()[:2] + game24.puzzles_in_test_split()[:1])
    assert run(_command_args(["export-traces", str(tmp_path / "run"), "--out", str(tmp_path / "x")])) == 0
    args = _command_args(["train-verifier", "--traces", str(tmp_path / "x"), "--from", str(start),
                          "--out", str(tmp_path / "w"), "--steps", "2", "--batch-size", "4",
                          "--threads", "1", "--target", "correct"])
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "4 paths from 2 puzzles" in out and "rows of test puzzles (900-999" in out
    before, _ = checkpoint.load_verifier(start)
    after, _ = checkpoint.load_verifier(tmp_path / "w")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                      after.state_dict().values()))
    info = checkpoint.read_meta(tmp_path / "w", checkpoint.VERIFIER_NAME)["info"]["flywheel"]
    assert info["traces"] == str(tmp_path / "x") and info["num_paths"] == 4

