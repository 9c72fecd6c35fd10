"""PRM presets on tiny random models of each family: exact inputs, positions read, scores by hand.

Every model is built here (tests/fixtures/make_tiny_prms.py) and loaded through the
hf verifier; each score is checked against a hand computation from the model's raw
output following the family's own reference code, so a wrong layout, position or
class fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="the hf backend needs transformers (pip install -e .[hf])")

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_tiny_prms as tiny_prms  # noqa: E402

from ponder.actors.backends.hf_verifier import HFVerifier, _prm_auto_class  # noqa: E402
from ponder.actors.backends.prm import PRESETS, QWEN_MATH_SYSTEM, detect_preset, resolve_convention  # noqa: E402
from ponder.actors.backends.prm_input import encode_path  # noqa: E402
from ponder.actors.factory import BackendSpec, build_backend  # noqa: E402
from ponder.search.messages import ScoreRequest  # noqa: E402

torch.set_num_threads(1)
PROBLEM = "Input: 4 4 6 8"
STEPS = ["4 + 8 = 12 (left: 4 6 12)", "6 - 4 = 2 (left: 2 12)", "2 * 12 = 24"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_prms")
    makers = {"qwen": tiny_prms.make_qwen_prm, "shepherd": tiny_prms.make_shepherd_prm,
              "rlhflow": tiny_prms.make_rlhflow_prm, "skywork": tiny_prms.make_skywork_prm}
    return {name: make(root / name) for name, make in makers.items()}


def _score(prm: HFVerifier, paths: list[list[str]], request_id: int = 1):
    return prm.score([ScoreRequest(request_id=request_id, prompt=PROBLEM, paths=paths)])[0]


def _check_unit(scores: list[float], num_steps: int) -> None:
    assert len(scores) == num_steps
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in scores)


def test_qwen_math_prm_reads_class_one_at_each_extra_0(models):
    prm = HFVerifier(models["qwen"])  # detected: a token classifier whose tokenizer has <extra_0>
    assert prm.convention.name == "qwen2.5-math-prm"
    text = (f"<|im_start|>system\n{QWEN_MATH_SYSTEM}<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n"
            f"<|im_start|>assistant\n{'<extra_0>'.join(STEPS)}<extra_0><|im_end|>\n")
    ids = prm.tokenizer(text, add_special_tokens=False)["input_ids"]
    sep = prm.tokenizer.convert_tokens_to_ids("<extra_0>")
    expected_positions = [t for t, i in enumerate(ids) if i == sep]
    assert encode_path(prm.tokenizer, prm.convention, PROBLEM, STEPS) == (ids, expected_positions)
    res = _score(prm, [STEPS, STEPS[:1]])
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]  # (T, 2)
    expected = logits[expected_positions].softmax(-1)[:, 1]  # the model card's make_step_rewards
    _check_unit(res.step_scores[0], 3)
    assert res.step_scores[0] == pytest.approx(expected.tolist(), abs=1e-5)
    assert res.step_scores[1][0] == pytest.approx(res.step_scores[0][0], abs=1e-5)  # causal: a prefix scores the same


def test_math_shepherd_reads_plus_minus_at_each_ki_tag(models):
    prm = HFVerifier(models["shepherd"])  # detected: a causal LM without a chat template
    assert prm.convention.name == "math-shepherd"
    text = f"{PROBLEM} Step 1: {STEPS[0]} ки\nStep 2: {STEPS[1]} ки\nStep 3: {STEPS[2]} ки"
    ids = prm.tokenizer(text)["input_ids"]
    assert ids[0] == prm.tokenizer.bos_token_id  # encode() adds BOS, as Mistral's does
    tag = prm.tokenizer.convert_tokens_to_ids(" ки")
    expected_positions = [t for t, i in enumerate(ids) if i == tag]
    assert encode_path(prm.tokenizer, prm.convention, PROBLEM, STEPS) == (ids, expected_positions)
    # a generator that already numbers its steps is not numbered twice
    numbered = [f"Step {k + 1}: {s}" for k, s in enumerate(STEPS)]
    assert encode_path(prm.tokenizer, prm.convention, PROBLEM, numbered)[0] == ids
    plus, minus = (prm.tokenizer.convert_tokens_to_ids(t) for t in ("+", "-"))
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
    expected = logits[:, [plus, minus]].softmax(-1)[:, 0][torch.tensor(ids) == tag]  # the model card's reading
    res = _score(prm, [STEPS])
    _check_unit(res.step_scores[0], 3)
    assert res.step_scores[0] == pytest.approx(expected.tolist(), abs=1e-5)


def test_rlhflow_reads_plus_where_the_assistant_reply_is_predicted(models):
    prm = HFVerifier(models["rlhflow"], prm="rlhflow")
    turns = [f"{PROBLEM} {STEPS[0]}", STEPS[1], STEPS[2]]
    text = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>user<|end_header_id|>\n\n{t}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>" for t in turns)
    ids, positions = encode_path(prm.tokenizer, prm.convention, PROBLEM, STEPS)
    assert ids == prm.tokenizer(text, add_special_tokens=False)["input_ids"]
    plus, minus = (prm.tokenizer.convert_tokens_to_ids(t) for t in ("+", "-"))
    assert [ids[p + 1] for p in positions] == [plus] * 3  # each read position predicts a "+" reply
    res = _score(prm, [STEPS])
    _check_unit(res.step_scores[0], 3)
    # RLHFlow's reference: one chat per prefix, logits at position -3 (before "+", <|eot_id|>)
    expected = []
    for k in range(3):
        chat = [m for t in turns[:k + 1]
                for m in ({"role": "user", "content": t}, {"role": "assistant", "content": "+"})]
        prefix_ids = prm.tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)
        with torch.no_grad():
            logits = prm.model(input_ids=torch.tensor([prefix_ids])).logits[0, -3, [plus, minus]]
        expected.append(logits.softmax(-1)[0].item())
    assert res.step_scores[0] == pytest.approx(expected, abs=1e-5)


def _skywork_prepare_input(tokenizer, problem: str, response: str):
    """Skywork's prepare_input(step_token="\\n"), rewritten: (input_ids, reward_flags)."""
    ids = tokenizer.encode(tokenizer.bos_token + problem + "\n", add_special_tokens=False)
    flags = [0] * len(ids)
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    for line in response.split("\n"):
        piece = (tokenizer.encode(line, add_special_tokens=False) if line else []) + [newline]
        ids += piece
        flags += [0] * (len(piece) - 1) + [1]
    return ids, flags


def test_skywork_reads_sigmoid_value_at_each_step_end(models):
    from transformers import Qwen2ForCausalLM

    prm = HFVerifier(models["skywork"])  # detected: architecture Qwen2ForPrmModel
    assert prm.convention.name == "skywork-prm"
    ids, flags = _skywork_prepare_input(prm.tokenizer, PROBLEM, "\n".join(STEPS))
    expected_positions = [t for t, f in enumerate(flags) if f]
    assert ids[0] == prm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert encode_path(prm.tokenizer, prm.convention, PROBLEM, STEPS) == (ids, expected_positions)
    # by hand: the causal LM's last hidden state through the checkpoint's v_head, sigmoid
    lm = Qwen2ForCausalLM.from_pretrained(models["skywork"], local_files_only=True).eval()
    from safetensors.torch import load_file

    tensors = load_file(str(models["skywork"] / "model.safetensors"))
    with torch.no_grad():
        hidden = lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]  # (T, H)
        values = hidden @ tensors["v_head.summary.weight"][0] + tensors["v_head.summary.bias"][0]  # (T,)
    res = _score(prm, [STEPS])
    _check_unit(res.step_scores[0], 3)
    assert res.step_scores[0] == pytest.approx(values[expected_positions].sigmoid().tolist(), abs=1e-5)
    # a step of two lines is two of Skywork's lines, scored once, at its last line's end
    two_lines = [STEPS[0] + "\n" + STEPS[1], STEPS[2]]
    ids2, positions2 = encode_path(prm.tokenizer, prm.convention, PROBLEM, two_lines)
    assert ids2 == ids and positions2 == expected_positions[1:]


def test_path_longer_than_the_context_fails_its_request_by_name(models):
    prm = HFVerifier(models["shepherd"])
    assert prm.max_length == tiny_prms.MAX_POSITIONS
    long_path = [f"{k} + {k} = {2 * k} (left: {k} 4 6)" for k in range(1, 40)]
    with pytest.raises(ValueError, match=r"request 7: path 1 is \d+ PRM tokens, more than .* max length 160"):
        prm.score([ScoreRequest(request_id=7, prompt=PROBLEM, paths=[STEPS, long_path])])
    short = HFVerifier(models["shepherd"], max_length=20)
    with pytest.raises(ValueError, match="request 2: path 0"):
        _score(short, [STEPS], request_id=2)


def test_presets_by_name_detection_and_clear_errors(models, tmp_path):
    assert set(PRESETS) == {"qwen2.5-math-prm", "math-shepherd", "rlhflow", "skywork-prm"}
    with pytest.raises(ValueError, match="presets: math-shepherd, qwen2.5-math-prm, rlhflow, skywork-prm"):
        resolve_convention("shepherd-9000")
    assert detect_preset({"architectures": ["Qwen2ForProcessRewardModel"]}, None) == "qwen2.5-math-prm"
    assert detect_preset({"architectures": ["Qwen2ForPrmModel"]}, None) == "skywork-prm"
    with pytest.raises(ValueError, match="set verifier.kwargs.prm to one of"):
        HFVerifier(models["rlhflow"])  # a chat causal LM: Math-Shepherd or RLHFlow? it does not guess
    qwen_remote = tmp_path / "qwen_remote"
    qwen_remote.mkdir()
    (qwen_remote / "config.json").write_text('{"architectures": ["Qwen2ForProcessRewardModel"]}')
    with pytest.raises(ValueError, match="trust_remote_code"):  # else a random head would score
        _prm_auto_class(str(qwen_remote), "reward_head", trust_remote_code=False)
    with pytest.raises(ValueError, match="once"):
        HFVerifier(models["shepherd"], prm="math-shepherd", convention="math-shepherd")
    # what a config's verifier.kwargs.prm reaches: the factory builds the verifier with it
    prm = build_backend(BackendSpec("hf", {"model_path": str(models["rlhflow"]), "prm": "rlhflow"}), "verifier")
    assert prm.convention == PRESETS["rlhflow"]
