"""The embedded model: tokenizer, cached vs uncached forward, prefix cache, sampling."""

from __future__ import annotations

import pytest
import torch

from ponder.models.generation import BatchGenerator
from ponder.models.gpt import GPT, GPTConfig
from ponder.models.kv_cache import GroupCache
from ponder.models.prefix_cache import PrefixCache
from ponder.models.tokenizer import BOS_ID, EOS_ID, PAD_ID, CharTokenizer
from ponder.search.flops import flops
from ponder.search.messages import GenerateRequest

torch.set_num_threads(1)
PROMPT = "Input: 4 5 6 10\n"


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=64)).eval()


def test_tokenizer_round_trip_and_clear_error(tok):
    text = "10 - 4 = 6 (left: 5 6 6)\nAnswer: (5 * (10 - 4)) - 6 = 24\n"
    ids = tok.encode(text, bos=True)
    assert ids[0] == BOS_ID and len(ids) == len(text) + 1
    assert tok.decode(ids + [EOS_ID, PAD_ID]) == text
    with pytest.raises(ValueError, match="'%'"):
        tok.encode("5 % 3")
    assert CharTokenizer.from_dict(tok.to_dict()).encode(text) == tok.encode(text)


def test_chunked_cached_forward_matches_full_forward(tok, model):
    ids = torch.tensor([tok.encode(PROMPT + "10 - 4 = 6 (left: 5 6 6)\n", bos=True)])  # (1, T)
    with torch.no_grad():
        full, _ = model(ids)  # (1, T, V)
        group = GroupCache.empty(2, 2, 32, num_rows=1, capacity=ids.shape[1])
        parts = [model.forward_groups(ids[:, a:b], [group]) for a, b in ((0, 7), (7, 8), (8, ids.shape[1]))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def _recomputed_logprob(model, tok, prompt: str, tokens: list[int]) -> float:
    """Sum of the sampled tokens' logprobs by a plain full forward (no cache, no groups)."""
    ids = tok.encode(prompt, bos=True) + tokens
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))  # (1, T-1, V)
    logits[..., [PAD_ID, BOS_ID]] = float("-inf")  # the sampler never emits these
    logp = torch.log_softmax(logits[0], dim=-1)  # (T-1, V)
    start = len(ids) - len(tokens) - 1
    return float(sum(logp[start + t, tok_id] for t, tok_id in enumerate(tokens)))


def test_sibling_expansion_equals_independent_recomputation(tok, model):
    gen = BatchGenerator(model, tok)
    reqs = [GenerateRequest(0, PROMPT, n=5, max_new_tokens=12, stop=(), seed=1),
            GenerateRequest(1, "Input: 1 2 3 4\n", n=3, max_new_tokens=9, stop=(), seed=2)]
    for req, res in zip(reqs, gen.generate(reqs)):
        assert len(res.texts) == req.n
        for tokens, cum in zip(res.token_ids, res.cumulative_logprobs):
            assert cum == pytest.approx(_recomputed_logprob(model, tok, req.prefix, tokens), abs=1e-3)


def test_prefix_cache_serves_child_prompts_exactly(tok, model):
    cached, uncached = BatchGenerator(model, tok), BatchGenerator(model, tok, max_cache_tokens=0)
    first = cached.generate([GenerateRequest(0, PROMPT, n=2, max_new_tokens=10, stop=("5",), seed=3)])[0]
    child = PROMPT + first.texts[0] + "5"  # the first sample's text plus its stop token
    req = GenerateRequest(1, child, n=4, max_new_tokens=8, stop=(), seed=4)
    hit, miss = cached.generate([req])[0], uncached.generate([req])[0]
    prompt_len = len(tok.encode(child, bos=True))
    if first.finish_reasons[0] == "stop" and first.texts[0]:
        # Only the child's last position is computed; the rest came from the first call's sample.
        assert hit.num_cached_prompt_tokens == 4 * prompt_len - 1
    assert miss.num_cached_prompt_tokens == 3 * prompt_len  # computed once, shared by 4 samples
    assert hit.token_ids == miss.token_ids
    assert hit.cumulative_logprobs == pytest.approx(miss.cumulative_logprobs, abs=1e-4)


def test_sampling_is_reproducible_per_seed(tok, model):
    gen = BatchGenerator(model, tok)
    req = GenerateRequest(0, PROMPT, n=4, max_new_tokens=15, stop=(), seed=7)
    other = GenerateRequest(1, "Input: 2 3 4 5\n", n=2, max_new_tokens=15, stop=(), seed=8)
    a = gen.generate([req])[0]
    b = BatchGenerator(model, tok, max_cache_tokens=0).generate([other, req])[1]
    assert a.token_ids == b.token_ids  # same seed, other batch mates, no cache
    c = gen.generate([GenerateRequest(0, PROMPT, n=4, max_new_tokens=15, stop=(), seed=9)])[0]
    assert c.token_ids != a.token_ids


def test_stop_strings_limits_and_counts(tok, model):
    gen = BatchGenerator(model, tok)
    res = gen.generate([GenerateRequest(0, PROMPT, n=8, max_new_tokens=6, stop=("1", "2"), seed=0)])[0]
    prompt_len = len(tok.encode(PROMPT, bos=True))
    assert res.num_prompt_tokens == 8 * prompt_len
    assert res.num_cached_prompt_tokens == 7 * prompt_len
    assert res.num_generated_tokens == sum(len(t) for t in res.token_ids)
    for text, tokens, reason in zip(res.texts, res.token_ids, res.finish_reasons):
        assert "1" not in text and "2" not in text
        assert len(tokens) <= 6
        if reason == "length":
            assert len(tokens) == 6 and tok.decode(tokens) == text
        else:
            assert reason == "stop" and (tokens[-1] == EOS_ID or tok.decode(tokens) in (text + "1", text + "2"))


def test_prompt_filling_the_context_returns_length_and_computes_nothing(tok, model):
    long_prompt = "1 " * 60
    res = BatchGenerator(model, tok).generate([GenerateRequest(0, long_prompt, n=2, max_new_tokens=4)])[0]
    assert res.finish_reasons == ["length", "length"] and res.texts == ["", ""]
    assert res.num_cached_prompt_tokens == res.num_prompt_tokens and res.num_generated_tokens == 0


def test_prefix_cache_lru_eviction_and_longest_match():
    cache = PrefixCache(max_num_tokens=6)
    kv = lambda n: torch.zeros(1, 1, n, 2)  # noqa: E731
    a = cache.insert((1, 2, 3), None, kv(3), kv(3))
    cache.insert((1, 2, 3, 4, 5), a, kv(2), kv(2))
    assert len(cache.lookup([1, 2, 3, 4, 5, 6]).tokens) == 5
    assert len(cache.lookup([1, 2, 3, 4, 5], max_len=4).tokens) == 3
    # (1, 2, 3) was just used, so the 7th position evicts (1, 2, 3, 4, 5).
    cache.insert((7, 8), None, kv(2), kv(2))
    assert cache.num_tokens <= 6 and cache.lookup([7, 8]) is not None
    k, _, _ = cache.lookup([1, 2, 3, 4, 5]).full()
    assert k.shape[2] == 3


def test_model_spec_matches_flop_formula(model):
    spec = model.model_spec()
    body = sum(p.numel() for n, p in model.named_parameters() if "wte" not in n and "wpe" not in n)
    assert spec.num_params == body and spec.num_layers == 2 and spec.d_model == 64
    assert flops(spec, 10, 20) == 10 * (2 * body + 2 * 2 * 64 * 20)
