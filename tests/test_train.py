"""Training the embedded models: data builders (no test puzzle ever), loss goes down, checkpoints load."""

from __future__ import annotations

import argparse
import random

import pytest
import torch

from ponder.models import train
from ponder.models.data import (GeneratorBatcher, Rollout, VerifierBatcher, generator_texts,
                                step_targets)
from ponder.models.gpt import GPT, GPTConfig
from ponder.models.rollouts import collect_rollouts, is_correct, split_steps
from ponder.models.tokenizer import CharTokenizer
from ponder.tasks import game24

torch.set_num_threads(1)


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def _key(numbers) -> tuple[int, ...]:
    return tuple(sorted(numbers))


@pytest.fixture(scope="module")
def test_keys() -> set[tuple[int, ...]]:
    keys = {_key(game24.parse_numbers(p.problem)) for p in game24.puzzles_in_test_split()}
    assert len(keys) == 100
    return keys


def _numbers_of_prompt(text: str) -> tuple[int, ...]:
    first_line = text.split("\n")[0]
    assert first_line.startswith("Input: ")
    return _key(game24.parse_numbers(first_line))


def test_train_puzzles_exclude_the_test_split(test_keys):
    puzzles = train.train_puzzles(_args())
    assert len(puzzles) >= 1200
    assert not {_key(p) for p in puzzles} & test_keys
    dev = train.train_puzzles(_args(dev=True))
    assert len(dev) < len(puzzles) and not {_key(p) for p in dev} & test_keys


def test_generator_data_builder_output_has_no_test_puzzle(test_keys):
    examples = generator_texts(train.train_puzzles(_args()))
    seen = {_numbers_of_prompt(prompt) for prompt, _ in examples}
    assert len(seen) >= 1200 and not seen & test_keys
    tok = CharTokenizer()
    x, _ = GeneratorBatcher(examples, tok).batch(random.Random(0), 256)
    assert not {_numbers_of_prompt(tok.decode(row.tolist())) for row in x} & test_keys


def test_builders_refuse_a_test_puzzle():
    test_numbers = tuple(game24.parse_numbers(game24.puzzles_in_test_split()[0].problem))
    with pytest.raises(AssertionError, match="test puzzle"):
        generator_texts([test_numbers])
    with pytest.raises(AssertionError, match="test puzzle"):
        step_targets([Rollout(test_numbers, ["Answer: 1 = 24"], False)])
    tok = CharTokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=32))
    with pytest.raises(AssertionError, match="test puzzle"):
        collect_rollouts(model, tok, [test_numbers], num_rollouts=1)


def test_verifier_data_builder_output_has_no_test_puzzle_and_uses_success_rates(test_keys):
    rng = random.Random(0)
    rollouts = []
    for numbers in train.train_puzzles(_args())[::40]:
        for _ in range(3):
            steps, _ = game24.random_trace(numbers, rng)
            rollouts.append(Rollout(numbers, steps, is_correct(numbers, steps)))
        for sol in game24.solutions(numbers)[:2]:
            rollouts.append(Rollout(numbers, sol, is_correct(numbers, sol)))
    assert any(r.correct for r in rollouts) and not all(r.correct for r in rollouts)
    paths = step_targets(rollouts)
    assert not {_key(numbers) for numbers, _, _ in paths} & test_keys
    for numbers, steps, targets in paths:
        through = [r for r in rollouts if r.numbers == numbers and r.steps[:1] == steps[:1]]
        assert targets[0] == pytest.approx(sum(r.correct for r in through) / len(through))
    tok = CharTokenizer()
    x, mask, target = VerifierBatcher(paths, tok, 256).batch(rng, 64)
    assert not {_numbers_of_prompt(tok.decode(row.tolist())) for row in x} & test_keys
    assert bool((target[~mask] == 0).all()) and bool(((target >= 0) & (target <= 1)).all())


def test_walk_rows_train_only_on_step_results():
    tok = CharTokenizer()
    examples = generator_texts(train.train_puzzles(_args())[:10])
    x, y = GeneratorBatcher(examples, tok, random_fraction=1.0).batch(random.Random(0), 64)
    num_walks = 0
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        text = tok.decode(row_x)
        if "Answer" in text:
            continue  # a walk that happened to reach 24 is a solution row
        num_walks += 1
        trained = [t >= 0 for t in row_y[:len(text)]]  # trained[p]: is token p + 1 (char p of text) a target
        line_start = text.index("\n") + 1  # after the prompt
        for line in text[line_start:].split("\n")[:-1]:
            eq = line.index("=")
            assert not any(trained[line_start:line_start + eq + 1])  # operands and operator: never
            assert all(trained[line_start + eq + 1:line_start + len(line) + 1])  # result and left list
            line_start += len(line) + 1
    assert num_walks > 10


def test_split_steps_stops_at_the_answer():
    text = "1 + 2 = 3 (left: 3 3 4)\n\nAnswer: 1 = 24\n5 + 5 = 10 (left: 10)"
    assert split_steps(text) == ["1 + 2 = 3 (left: 3 3 4)", "Answer: 1 = 24"]


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    tok = CharTokenizer()
    examples = generator_texts(train.train_puzzles(_args())[:20])
    batcher = GeneratorBatcher(examples, tok)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=32))
    x, y = batcher.batch(random.Random(123), 32)
    with torch.no_grad():
        before = model(x, y)[1].item()
    rng = random.Random(0)
    train.fit(model, lambda: batcher.batch(rng, 16), steps=40, peak_lr=3e-3, label="test", log_every=1000)
    with torch.no_grad():
        after = model(x, y)[1].item()
    assert after < before - 0.5


def test_run_writes_checkpoints_the_backends_load(tmp_path, capsys):
    from ponder.actors.backends.embedded import EmbeddedGenerator, EmbeddedVerifier
    from ponder.search.messages import GenerateRequest, ScoreRequest

    args = _args(out=str(tmp_path), gen_steps=3, ver_steps=3, rollouts=2, n_layer=1, n_head=1,
                 n_embd=32, max_puzzles=4, threads=1, batch_size=4)
    assert train.run(args) == 0
    assert "[done]" in capsys.readouterr().out
    gen = EmbeddedGenerator(model_path=tmp_path)
    res = gen.generate([GenerateRequest(0, "Input: 1 2 3 4\n", n=2, max_new_tokens=5)])[0]
    assert len(res.texts) == 2
    ver = EmbeddedVerifier(model_path=tmp_path)
    scores = ver.score([ScoreRequest(0, "Input: 1 2 3 4\n", [["1 + 2 = 3 (left: 3 3 4)"]])])[0]
    assert len(scores.step_scores[0]) == 1 and 0.0 <= scores.step_scores[0][0] <= 1.0
    with pytest.raises(FileNotFoundError, match="ponder train"):
        EmbeddedGenerator(model_path=tmp_path / "missing")


def test_corrupted_steps_are_wrong_and_their_paths_labelled_by_the_checker():
    from ponder.models.corrupt import corrupt_step
    from ponder.models.rollouts import corrupted_start

    rng = random.Random(0)
    numbers = train.train_puzzles(_args())[0]
    solution = game24.solutions(numbers)[0]
    answers_right = answers = 0
    for j, step in enumerate(solution):
        for _ in range(20):
            bad = corrupt_step(step, rng)
            if bad is None:
                continue
            assert bad != step
            if game24.is_terminal(step):  # a changed answer is wrong unless, say, 1 * 1 became 1 / 1
                answers += 1
                answers_right += is_correct(numbers, solution[:j] + [bad])
            else:  # the arithmetic or the bookkeeping no longer holds
                assert not game24.check_step(numbers, solution[:j] + [bad]), bad
    assert answers >= 10 and answers_right <= answers // 4
    starts = [corrupted_start(numbers, rng) for _ in range(50)]
    assert all(s is None or game24.is_terminal(s[-1]) or not game24.check_step(numbers, s) for s in starts)
    assert sum(s is not None for s in starts) >= 40
    tok = CharTokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=32))
    rollouts = collect_rollouts(model, tok, [numbers], num_rollouts=0, num_corrupt=6)
    assert len(rollouts) >= 4  # each corrupted start carried on once (an answer line: as it stands)
    assert sum(r.correct for r in rollouts) <= 1  # a path through a mistake is (almost) never right


def test_rollouts_round_trip_through_a_file_and_refuse_the_test_split(tmp_path):
    from ponder.models.rollouts import load_rollouts, save_rollouts

    rollouts = [Rollout((1, 2, 3, 4), ["1 + 2 = 3 (left: 3 3 4)"], False),
                Rollout((1, 1, 4, 6), game24.solutions((1, 1, 4, 6))[0], True)]
    save_rollouts(rollouts, tmp_path / "r.jsonl")
    assert load_rollouts(tmp_path / "r.jsonl") == rollouts
    test_numbers = tuple(game24.parse_numbers(game24.puzzles_in_test_split()[0].problem))
    save_rollouts([Rollout(test_numbers, ["Answer: 1 = 24"], False)], tmp_path / "bad.jsonl")
    with pytest.raises(AssertionError, match="test puzzle"):
        load_rollouts(tmp_path / "bad.jsonl")
