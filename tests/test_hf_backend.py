"""hf backends on tiny random local models: sampling, stops, seeds, token counts, PRM conventions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="the hf backend needs transformers (pip install -e .[hf])")

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_tiny_llama as tiny  # noqa: E402

from ponder.actors.backends.hf import HFGenerator  # noqa: E402
from ponder.actors.backends.hf_verifier import HFVerifier  # noqa: E402
from ponder.actors.backends.prm import PRMConvention  # noqa: E402
from ponder.search.flops import actual_flops, worst_case_flops  # noqa: E402
from ponder.search.messages import GenerateRequest, ScoreRequest  # noqa: E402

torch.set_num_threads(1)
PROMPT = "Input: 4 4 6 8\n4 + 8 = 12 (left: 4 6 12)\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "llama": tiny.make_tiny_llama(root / "llama"),
        "token_prm": tiny.make_tiny_token_prm(root / "token_prm"),
    }


@pytest.fixture(scope="module")
def gen(models):
    return HFGenerator(models["llama"], seed=0)


def teacher_forced_logprob(gen: HFGenerator, prompt_ids: list[int], tokens: list[int]) -> float:
    """Sum of log p(token) re-computed by one plain forward pass over prompt + tokens."""
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logp = gen.model(input_ids=ids).logits[0].float().log_softmax(-1)  # (T, V)
    start = len(prompt_ids) - 1
    return sum(logp[start + k, tok].item() for k, tok in enumerate(tokens))


def test_n_samples_order_and_exact_token_counts(gen):
    reqs = [
        GenerateRequest(request_id=7, prefix=PROMPT, n=3, max_new_tokens=12, stop=(), seed=1),
        GenerateRequest(request_id=3, prefix="Input: 1 2 3 4", n=1, max_new_tokens=5, stop=(), seed=2),
        GenerateRequest(request_id=9, prefix="12 * 2 = 24", n=2, max_new_tokens=8, stop=(), seed=3),
    ]
    results = gen.generate(reqs)
    assert [r.request_id for r in results] == [7, 3, 9]
    for req, res in zip(reqs, results):
        prompt_len = len(gen.tokenizer(req.prefix)["input_ids"])
        assert len(res.texts) == len(res.token_ids) == len(res.cumulative_logprobs) == req.n
        assert res.num_prompt_tokens == req.n * prompt_len
        # The prompt is computed once and its KV cache copied to the other n - 1 samples.
        assert res.num_cached_prompt_tokens == (req.n - 1) * prompt_len
        assert res.num_generated_tokens == sum(len(t) for t in res.token_ids)
        for ids, reason, text in zip(res.token_ids, res.finish_reasons, res.texts):
            assert 1 <= len(ids) <= req.max_new_tokens
            assert reason == ("eos" if ids[-1] in gen.eos_ids else "length" if len(ids) == req.max_new_tokens else "stop")
            assert text == gen.tokenizer.decode(ids, skip_special_tokens=True)


def test_cumulative_logprobs_match_a_teacher_forced_pass(gen):
    # Prompts of different lengths, so left padding and the KV copy are both exercised.
    reqs = [
        GenerateRequest(request_id=0, prefix=PROMPT, n=2, max_new_tokens=10, stop=(), seed=5),
        GenerateRequest(request_id=1, prefix="3 + 5", n=2, max_new_tokens=10, stop=(), seed=6, temperature=0.7, top_p=0.9),
    ]
    for req, res in zip(reqs, gen.generate(reqs)):
        prompt_ids = gen.tokenizer(req.prefix)["input_ids"]
        for ids, lp in zip(res.token_ids, res.cumulative_logprobs):
            assert lp < 0
            assert lp == pytest.approx(teacher_forced_logprob(gen, prompt_ids, ids), abs=1e-3)


def test_seeds_reproduce_and_differ(gen):
    req = GenerateRequest(request_id=1, prefix=PROMPT, n=2, max_new_tokens=16, stop=(), seed=42)
    first, again = gen.generate([req])[0], gen.generate([req])[0]
    assert first.token_ids == again.token_ids and first.cumulative_logprobs == again.cumulative_logprobs
    assert first.token_ids[0] != first.token_ids[1], "the n samples of one request must be distinct draws"
    other = gen.generate([GenerateRequest(request_id=1, prefix=PROMPT, n=2, max_new_tokens=16, stop=(), seed=43)])[0]
    assert other.token_ids != first.token_ids
    # A request's draws come from its own generator: a batch neighbour does not change them.
    neighbour = GenerateRequest(request_id=2, prefix=PROMPT, n=3, max_new_tokens=16, stop=(), seed=7)
    assert gen.generate([neighbour, req])[1].token_ids == first.token_ids


def test_greedy_samples_agree(gen):
    res = gen.generate([GenerateRequest(request_id=1, prefix=PROMPT, n=3, max_new_tokens=8, stop=(), temperature=0.0)])[0]
    assert res.token_ids[0] == res.token_ids[1] == res.token_ids[2]


def _pick_stop(text: str) -> str:
    """A letter or digit of the sampled text that first occurs after its start."""
    for ch in text[2:]:
        if ch.isalnum() and text.find(ch) > 0:
            return ch
    pytest.fail(f"no usable stop character in {text!r}")


def test_stop_string_cuts_at_first_occurrence(gen):
    base = GenerateRequest(request_id=1, prefix=PROMPT, n=1, max_new_tokens=30, stop=(), seed=11)
    full = gen.generate([base])[0]
    stop = _pick_stop(full.texts[0])
    other = GenerateRequest(request_id=2, prefix="Input: 2 3 4 5", n=2, max_new_tokens=6, stop=("\x00never",), seed=4)
    stopped, untouched = gen.generate([
        GenerateRequest(request_id=1, prefix=PROMPT, n=1, max_new_tokens=30, stop=("zzzz", stop), seed=11), other,
    ])
    ids, full_ids = stopped.token_ids[0], full.token_ids[0]
    m = len(ids)
    assert ids == full_ids[:m], "a stop must end the sample, not change it"
    decoded = gen.tokenizer.decode(full_ids[:m], skip_special_tokens=True)
    assert stop in decoded and stop not in gen.tokenizer.decode(full_ids[:m - 1], skip_special_tokens=True)
    assert stopped.texts[0] == decoded[:decoded.find(stop)]
    assert stop not in stopped.texts[0] and stopped.finish_reasons == ["stop"]
    assert stopped.num_generated_tokens == m < full.num_generated_tokens
    assert "stop" not in untouched.finish_reasons  # its stop string never occurs: length, or EOS
    assert untouched.token_ids == gen.generate([other])[0].token_ids


def test_model_spec_counts_non_embedding_params(gen):
    spec = gen.model_spec()
    h, inter, vocab = tiny.HIDDEN_SIZE, tiny.INTERMEDIATE_SIZE, len(gen.tokenizer)
    per_layer = 4 * h * h + 3 * h * inter + 2 * h  # q, k, v, o; gate, up, down; two RMSNorms
    assert spec.num_params == tiny.NUM_LAYERS * per_layer + h + vocab * h  # + final norm + lm_head
    assert (spec.num_layers, spec.d_model) == (tiny.NUM_LAYERS, h)
    assert spec.prompt_once  # one prompt forward for all n samples: reserved once, settles under it
    request = GenerateRequest(request_id=1, prefix=PROMPT, n=3, max_new_tokens=6, stop=(), seed=0)
    result = gen.generate([request])[0]
    assert 0 < actual_flops(request, result, spec) <= worst_case_flops(request, spec)


def test_missing_model_path_names_it(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match="no_such_model"):
        HFGenerator(missing)
    with pytest.raises(ValueError, match="no_such_model"):
        HFVerifier(missing)


def test_bad_dtype_and_convention_are_named(models):
    with pytest.raises(ValueError, match="float64"):
        HFGenerator(models["llama"], dtype="float64")
    with pytest.raises(ValueError, match="shepherd-9000"):
        HFVerifier(models["llama"], convention="shepherd-9000")
    with pytest.raises(ValueError, match="'good step'"):
        HFVerifier(models["llama"], convention={"label_tokens": ["good step", "-"]})


def test_label_token_prm_matches_math_shepherd_reading(models):
    prm = HFVerifier(models["llama"], convention="math-shepherd")
    paths = [["4 + 8 = 12", "6 * 4 = 24"], ["4 * 6 = 24"], []]
    res = prm.score([ScoreRequest(request_id=5, prompt="Input: 4 4 6 8", paths=paths)])[0]
    assert res.request_id == 5 and [len(s) for s in res.step_scores] == [2, 1, 0]
    assert all(0.0 <= p <= 1.0 for s in res.step_scores for p in s)
    # Math-Shepherd by hand: "Step k: " before and tag " ки" after each step, softmax over ("+", "-") at the tags.
    text = "Input: 4 4 6 8 Step 1: 4 + 8 = 12 ки\nStep 2: 6 * 4 = 24 ки"
    ids = prm.tokenizer(text)["input_ids"]
    tag_id = prm.tokenizer.convert_tokens_to_ids(" ки")
    plus, minus = (prm.tokenizer.convert_tokens_to_ids(t) for t in ("+", "-"))
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
    expected = logits[torch.tensor(ids) == tag_id][:, [plus, minus]].softmax(-1)[:, 0]
    assert res.step_scores[0] == pytest.approx(expected.tolist(), abs=1e-5)
    assert res.num_prompt_tokens == len(ids) + len(prm.tokenizer("Input: 4 4 6 8 Step 1: 4 * 6 = 24 ки")["input_ids"])
    assert res.num_cached_prompt_tokens == 0


def test_causal_prm_step_score_depends_only_on_its_prefix(models):
    prm = HFVerifier(models["llama"])
    long, short = prm.score([ScoreRequest(request_id=1, prompt="Input: 1 2 3 4", paths=[["1 + 2 = 3", "3 * 4 = 12"], ["1 + 2 = 3"]])])[0].step_scores
    assert long[0] == pytest.approx(short[0], abs=1e-5)
    assert long[1] != pytest.approx(long[0], abs=1e-6)


def test_reward_head_prm_reads_class_one_at_separators(models):
    prm = HFVerifier(models["token_prm"], convention="qwen2.5-math-prm")
    steps = ["4 + 8 = 12", "6 * 4 = 24", "done"]
    res = prm.score([ScoreRequest(request_id=1, prompt="Input: 4 4 6 8", paths=[steps])])[0]
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": "Input: 4 4 6 8"},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    ids = prm.tokenizer(prm.tokenizer.apply_chat_template(messages, tokenize=False))["input_ids"]
    sep = prm.tokenizer.convert_tokens_to_ids("<extra_0>")
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]  # (T, 2)
    expected = logits[torch.tensor(ids) == sep].softmax(-1)[:, 1]
    assert len(res.step_scores[0]) == 3
    assert res.step_scores[0] == pytest.approx(expected.tolist(), abs=1e-5)
    assert res.num_prompt_tokens == len(ids)


def test_chat_convention_without_template_is_a_clear_error(models):
    prm = HFVerifier(models["llama"], convention=PRMConvention(mode="label_tokens", system_prompt="Be careful."))
    with pytest.raises(ValueError, match="chat template"):
        prm.score([ScoreRequest(request_id=1, prompt="Input: 1 2 3 4", paths=[["1 + 2 = 3"]])])


def test_batched_scoring_equals_one_path_at_a_time(models):
    prm = HFVerifier(models["llama"], max_batch_paths=4)
    paths = [["4 + 8 = 12", "6 * 4 = 24"], ["4 * 6 = 24 (left: 4 24)", "24 - 4 = 20", "no"], ["8 / 4 = 2"]]
    together = prm.score([ScoreRequest(request_id=1, prompt="Input: 4 4 6 8", paths=paths)])[0].step_scores
    for path, scores in zip(paths, together):
        alone = prm.score([ScoreRequest(request_id=2, prompt="Input: 4 4 6 8", paths=[path])])[0].step_scores[0]
        assert scores == pytest.approx(alone, abs=1e-5)


def test_remote_code_prm_loads_with_the_class_its_auto_map_names(tmp_path):
    from ponder.actors.backends.hf_verifier import _prm_auto_class

    (tmp_path / "config.json").write_text('{"auto_map": {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}}')
    assert _prm_auto_class(str(tmp_path), "reward_head", trust_remote_code=True) == "AutoModel"
    assert _prm_auto_class(str(tmp_path), "reward_head", trust_remote_code=False) == "AutoModelForTokenClassification"
    assert _prm_auto_class(str(tmp_path), "label_tokens", trust_remote_code=True) == "AutoModelForCausalLM"


def test_preallocated_cache_decodes_like_a_dynamic_cache(gen):
    from transformers import DynamicCache

    from ponder.actors.backends.hf_cache import preallocated_cache

    ids = torch.tensor([gen.tokenizer(PROMPT)["input_ids"]])  # (1, L)
    runs = []
    # Capacity for two new tokens only: the third step grows the buffers.
    for cache in (DynamicCache(config=gen.model.config), preallocated_cache(gen.model.config, ids.shape[1] + 2)):
        call = {gen._cache_arg: cache, "use_cache": True}
        with torch.no_grad():
            logits = [gen.model(input_ids=ids, **call).logits[:, -1]]
            cache.reorder_cache(torch.tensor([0, 0, 0]))  # one prompt, three rows
            for t in range(5):
                if t == 3:
                    cache.reorder_cache(torch.tensor([2, 0]))  # rows reordered and one dropped
                step = torch.tensor([[5 + t], [7], [9 + t]][:3 if t < 3 else 2])  # (R, 1)
                logits.append(gen.model(input_ids=step, **call).logits[:, -1])
        runs.append(logits)
    for dynamic, preallocated in zip(*runs):
        assert torch.allclose(dynamic, preallocated, atol=1e-5)
