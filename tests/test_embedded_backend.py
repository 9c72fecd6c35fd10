"""The embedded backends: exact token counts, cached scoring, and the shipped weights solving puzzles."""

from __future__ import annotations

import pytest
import torch

from ponder.actors.backends.embedded import (EmbeddedGenerator, EmbeddedVerifier, load_default_generator,
                                             load_default_verifier)
from ponder.models.gpt import GPT, GPTConfig
from ponder.models.tokenizer import PAD_ID, CharTokenizer
from ponder.models.verifier import ProcessRewardModel
from ponder.search.flops import actual_flops, worst_case_flops
from ponder.search.messages import GenerateRequest, ScoreRequest
from ponder.tasks import game24

torch.set_num_threads(1)
PROMPT = "Input: 4 5 6 10\n"
PATHS = [["10 - 4 = 6 (left: 5 6 6)", "5 * 6 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"],
         ["10 - 4 = 6 (left: 5 6 6)", "6 + 6 = 12 (left: 5 12)"],
         ["4 + 5 = 9 (left: 6 9 10)"]]


def _count_positions(trunk, count_pad: bool):
    """Wrap a trunk's cached forward to count the positions it really computes."""
    seen = {"positions": 0}
    inner = trunk.forward_groups

    def counting(idx, groups):
        seen["positions"] += int(idx.numel() if count_pad else (idx != PAD_ID).sum())
        return inner(idx, groups)

    trunk.forward_groups = counting
    return seen


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    tok = CharTokenizer()
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=64)
    return tok, GPT(config).eval(), ProcessRewardModel(config).eval()


def test_generator_reports_exactly_the_positions_it_computes(tiny):
    tok, model, _ = tiny
    backend = EmbeddedGenerator(model=model, tokenizer=tok)
    seen = _count_positions(model.transformer, count_pad=True)
    reqs = [GenerateRequest(0, PROMPT, n=4, max_new_tokens=10, seed=0),
            GenerateRequest(1, "Input: 1 2 3 4\n", n=2, max_new_tokens=10, seed=1)]
    results = backend.generate(reqs)
    reported = sum(r.num_prompt_tokens - r.num_cached_prompt_tokens + r.num_generated_tokens for r in results)
    # Every drawn token counts as generated; a sample's last one is never fed back.
    assert seen["positions"] == reported - 6
    assert results[0].num_prompt_tokens == 4 * len(tok.encode(PROMPT, bos=True))
    seen["positions"] = 0
    again = backend.generate(reqs[:1])[0]  # the prompt and its next-token logits are cached now
    assert again.num_cached_prompt_tokens == again.num_prompt_tokens
    assert seen["positions"] == again.num_generated_tokens - 4


def test_verifier_counts_and_cached_scores_match_full_forward(tiny):
    tok, _, prm = tiny
    backend = EmbeddedVerifier(model=prm, tokenizer=tok)
    seen = _count_positions(prm.transformer, count_pad=False)
    res = backend.score([ScoreRequest(0, PROMPT, PATHS)])[0]
    assert res.num_prompt_tokens - res.num_cached_prompt_tokens == seen["positions"]
    assert [len(s) for s in res.step_scores] == [3, 2, 1]
    with torch.no_grad():
        for steps, scores in zip(PATHS, res.step_scores):
            ids = tok.encode(PROMPT + "".join(s + "\n" for s in steps), bos=True)
            values = torch.sigmoid(prm(torch.tensor([ids]))[0][0])  # (T,)
            ends = [i for i, t in enumerate(ids) if t == tok.char_id("\n")][1:]
            assert scores == pytest.approx([float(values[e]) for e in ends], abs=1e-5)
    # A second request extending path 0 computes only its new step.
    seen["positions"] = 0
    longer = PATHS[0] + ["Answer: (5 * (10 - 4)) - 6 = 24"]
    res2 = backend.score([ScoreRequest(1, PROMPT, [longer])])[0]
    assert seen["positions"] == len(longer[-1]) + 1
    assert res2.num_prompt_tokens - res2.num_cached_prompt_tokens == seen["positions"]
    assert res2.step_scores[0][:3] == pytest.approx(res.step_scores[0], abs=1e-5)
    # Children of different parents (as beam search scores them) each reuse their own parent.
    seen["positions"] = 0
    children = [PATHS[1] + ["5 * 12 = 60 (left: 60)"], PATHS[2] + ["6 + 9 = 15 (left: 10 15)"]]
    res3 = backend.score([ScoreRequest(2, PROMPT, children)])[0]
    assert seen["positions"] == sum(len(c[-1]) + 1 for c in children)
    assert res3.num_prompt_tokens - res3.num_cached_prompt_tokens == seen["positions"]
    assert [s[:-1] for s in res3.step_scores] == [pytest.approx(res.step_scores[i], abs=1e-5) for i in (1, 2)]


def test_model_specs_feed_the_flop_formula(tiny):
    tok, model, prm = tiny
    gen_spec = EmbeddedGenerator(model=model, tokenizer=tok).model_spec()
    ver_spec = EmbeddedVerifier(model=prm, tokenizer=tok).model_spec()
    assert gen_spec.num_layers == 2 and gen_spec.d_model == 64
    assert ver_spec.num_params == gen_spec.num_params + 64 + 1  # the value head
    # The prompt runs once for all n samples, so reservations count it once; a result settles under that.
    assert gen_spec.prompt_once
    request = GenerateRequest(0, PROMPT, n=4, max_new_tokens=10, seed=0)
    result = EmbeddedGenerator(model=model, tokenizer=tok).generate([request])[0]
    assert 0 < actual_flops(request, result, gen_spec) <= worst_case_flops(request, gen_spec)


def test_shipped_weights_load_offline_and_solve_easy_puzzles(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the embedded backend must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    gen, ver = load_default_generator(), load_default_verifier()
    puzzles = [game24.parse_numbers(p.problem) for p in game24.load_puzzles()[:20:4]]  # ranks 1, 5, ..., 17
    reqs = [GenerateRequest(i, f"Input: {' '.join(map(str, nums))}\n", n=16, max_new_tokens=200,
                            stop=(), temperature=1.0, seed=i) for i, nums in enumerate(puzzles)]
    num_solved = 0
    for nums, res in zip(puzzles, gen.generate(reqs)):
        answers = [game24.extract_answer(t.split("\n")) for t in res.texts]
        num_solved += any(game24.verify(nums, a) for a in answers if a)
    assert num_solved == len(puzzles)
    scores = ver.score([ScoreRequest(0, PROMPT, PATHS)])[0].step_scores
    assert all(0.0 <= s <= 1.0 for path in scores for s in path)


# ------------------------------------------------------------ device and kernel path

HAS_CUDA = torch.cuda.is_available()


def test_device_auto_and_the_kernel_path_are_backend_kwargs(tiny, monkeypatch):
    tok, model, prm = tiny
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gen = EmbeddedGenerator(model=model, tokenizer=tok, device="auto", kernels="torch")
    ver = EmbeddedVerifier(model=prm, tokenizer=tok, device="cpu", kernels="auto")
    assert gen.sampler.device == torch.device("cpu") and gen.sampler.kernels == "torch"
    assert ver.scorer.device == torch.device("cpu") and model.transformer.kernels == "torch"
    # The explicit torch path is the one auto takes on CPU: the same tokens, bit for bit.
    req = GenerateRequest(0, PROMPT, n=3, max_new_tokens=12, seed=5)
    auto = EmbeddedGenerator(model=model, tokenizer=tok).generate([req])[0]
    torch_path = gen.generate([req])[0]
    assert auto.token_ids == torch_path.token_ids and auto.cumulative_logprobs == torch_path.cumulative_logprobs


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="gpu"), "embedded generator kwargs: device must be one of auto, cpu, cuda"),
    (dict(kernels="fast"), "embedded generator kwargs: kernels must be one of auto, torch, triton"),
    (dict(device="cuda"), "sees no GPU"),
    (dict(device="cpu", kernels="triton"), "triton"),
])
def test_bad_device_or_kernels_fail_before_loading_weights(kwargs, match, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    # An empty folder would raise FileNotFoundError if the weights were read first.
    with pytest.raises(ValueError, match=match):
        EmbeddedGenerator(model_path=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match.replace("generator", "verifier")):
        EmbeddedVerifier(model_path=tmp_path, **kwargs)


def test_backend_module_imports_without_ray():
    """The GPU check (benchmarks/gpu_check.py) runs on a box with torch and triton but no Ray."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
            "import ponder.actors.backends.embedded, ponder.models, ponder.tasks.game24\n"
            "assert sys.modules['ray'] is None")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("kernels", ["torch", "auto"])
def test_cuda_backends_match_cpu(kernels):
    """On CUDA (auto = Triton where it imports) greedy samples and step scores agree with CPU."""
    reqs = [GenerateRequest(i, f"Input: {nums}\n", n=2, max_new_tokens=60, stop=(), temperature=0.0, seed=i)
            for i, nums in enumerate(["4 5 6 10", "1 2 3 4", "2 3 5 12", "1 1 4 6"])]
    cpu = load_default_generator(device="cpu").generate(reqs)
    gpu = load_default_generator(device="cuda", kernels=kernels).generate(reqs)
    same = sum(a == b for c, g in zip(cpu, gpu) for a, b in zip(c.token_ids, g.token_ids))
    assert same >= 6, f"only {same} of 8 greedy samples agree"  # a float tie may flip one
    assert [r.num_cached_prompt_tokens for r in cpu] == [r.num_cached_prompt_tokens for r in gpu]
    cpu_scores = load_default_verifier(device="cpu").score([ScoreRequest(0, PROMPT, PATHS)])[0].step_scores
    gpu_ver = load_default_verifier(device="cuda", kernels=kernels)
    assert gpu_ver.scorer.device.type == "cuda"
    gpu_scores = gpu_ver.score([ScoreRequest(0, PROMPT, PATHS)])[0].step_scores
    for a, b in zip(cpu_scores, gpu_scores):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_sampling_is_reproducible_and_solves_easy_puzzles():
    gen = load_default_generator(device="cuda")
    puzzles = [game24.parse_numbers(p.problem) for p in game24.load_puzzles()[:20:4]]
    reqs = [GenerateRequest(i, f"Input: {' '.join(map(str, nums))}\n", n=16, max_new_tokens=200,
                            stop=(), temperature=1.0, seed=i) for i, nums in enumerate(puzzles)]
    first = gen.generate(reqs)
    gen.clear_cache()
    assert [r.token_ids for r in gen.generate(reqs)] == [r.token_ids for r in first]
    solved = sum(any(game24.verify(nums, game24.extract_answer(t.split("\n")))
                     for t in r.texts if game24.extract_answer(t.split("\n")))
                 for nums, r in zip(puzzles, first))
    assert solved >= len(puzzles) - 1
