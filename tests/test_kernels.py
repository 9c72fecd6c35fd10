"""CPU tests of the kernels' torch paths: shared-prefix attention and sampling.

The attention reference is the naive one: for each sibling, concatenate the
prefix with its suffix and run plain causal softmax attention in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.kernels import (
    merge_attention_states,
    sample,
    sampling_probs,
    shared_prefix_attention,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------- attention


def naive_attention(q, k_prefix, v_prefix, k_suffix, v_suffix, scale=None):
    """Per sibling: [prefix; suffix] keys, query t at position P + S - T + t, float64."""
    n, num_heads, t, d = q.shape
    p, s = k_prefix.shape[1], k_suffix.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    key_pos = torch.arange(p + s)  # (P+S,)
    query_pos = p + s - t + torch.arange(t)  # (T,)
    mask = key_pos[None, :] <= query_pos[:, None]  # (T, P+S)
    outs = []
    for i in range(n):
        k = torch.cat([k_prefix, k_suffix[i]], dim=1).double()  # (H, P+S, D)
        v = torch.cat([v_prefix, v_suffix[i]], dim=1).double()  # (H, P+S, D)
        scores = (q[i].double() @ k.transpose(1, 2)) * scale  # (H, T, P+S)
        scores = scores.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v)  # (H, T, D)
    return torch.stack(outs)  # (n, H, T, D)


def make_inputs(n, num_heads, p, s, t, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    q = randn(n, num_heads, t, d)  # (n, H, T, D)
    return q, randn(num_heads, p, d), randn(num_heads, p, d), randn(n, num_heads, s, d), randn(n, num_heads, s, d)


TOLERANCE = {torch.float32: dict(atol=3e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}

# (n siblings, H, P prefix, S suffix, T queries, D): the edges of the brief's ranges.
GRID = [
    (1, 1, 0, 1, 1, 32),  # no prefix, one token
    (1, 2, 1, 1, 1, 64),  # one-token prefix
    (64, 1, 2048, 1, 1, 128),  # many siblings, longest prefix, decode step
    (16, 2, 512, 16, 1, 64),  # decode after a short suffix
    (8, 2, 256, 16, 16, 32),  # whole suffix as queries (prefill of the children)
    (2, 1, 1024, 256, 256, 64),  # longest suffix
    (3, 2, 2048, 256, 5, 128),
    (33, 3, 100, 5, 3, 32),  # odd sizes
    (64, 1, 0, 256, 2, 64),  # no prefix, many siblings
    (64, 2, 2048, 16, 16, 32),  # 1,024 query rows: the prefix scores are split into row chunks
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", GRID, ids=lambda s: "n{}_H{}_P{}_S{}_T{}_D{}".format(*s))
def test_matches_naive_attention_on_grid(shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, seed=sum(shape))
    out = shared_prefix_attention(*inputs)
    assert out.shape == inputs[0].shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), naive_attention(*inputs), **TOLERANCE[dtype])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 64),
    num_heads=st.integers(1, 2),
    p=st.sampled_from([0, 1, 7, 64, 300, 1024, 2048]),
    s=st.integers(1, 256),
    t_frac=st.floats(0.0, 1.0),
    d=st.sampled_from([32, 64, 128]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_matches_naive_attention_random_shapes(n, num_heads, p, s, t_frac, d, dtype):
    t = max(1, min(s, round(t_frac * 8)))  # few queries keeps the naive reference cheap
    inputs = make_inputs(n, num_heads, p, s, t, d, dtype=dtype, seed=n * 7919 + p + s)
    torch.testing.assert_close(shared_prefix_attention(*inputs).double(), naive_attention(*inputs), **TOLERANCE[dtype])


def test_custom_scale_and_non_contiguous_inputs():
    q, kp, vp, ks, vs = make_inputs(4, 2, 33, 9, 3, 32, torch.float32, seed=3)
    q_nc = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    kp_nc = kp.transpose(0, 1).contiguous().transpose(0, 1)
    out = shared_prefix_attention(q_nc, kp_nc, vp, ks, vs, scale=0.3)
    torch.testing.assert_close(out.double(), naive_attention(q, kp, vp, ks, vs, scale=0.3), **TOLERANCE[torch.float32])


def test_gradients_match_naive_attention():
    inputs = [x.double().requires_grad_() for x in make_inputs(3, 2, 20, 6, 4, 32, torch.float64, seed=9)]
    naive_inputs = [x.detach().clone().requires_grad_() for x in inputs]
    weights = torch.randn(3, 2, 4, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (shared_prefix_attention(*inputs) * weights).sum().backward()
    (naive_attention(*naive_inputs) * weights).sum().backward()
    for mine, reference in zip(inputs, naive_inputs):
        torch.testing.assert_close(mine.grad, reference.grad)


def test_merge_attention_states_equals_attention_over_union():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 12, generator=g, dtype=torch.float64)  # (rows, keys)
    values = torch.randn(12, 4, generator=g, dtype=torch.float64)  # (keys, D)

    def part(lo, hi):
        lse = torch.logsumexp(scores[:, lo:hi], dim=-1)  # (rows,)
        return torch.softmax(scores[:, lo:hi], dim=-1) @ values[lo:hi], lse

    out, lse = merge_attention_states(*part(0, 5), *part(5, 12))
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ values)
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1))
    # An empty side (lse = -inf, output NaN garbage) drops out.
    empty_out = torch.full((5, 4), float("nan"), dtype=torch.float64)
    empty_lse = torch.full((5,), float("-inf"), dtype=torch.float64)
    out, _ = merge_attention_states(empty_out, empty_lse, *part(0, 12))
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ values)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(q=torch.zeros(2, 2, 3)), "q must be"),
        (dict(k_prefix=torch.zeros(3, 4, 8)), "k_prefix must be"),
        (dict(v_prefix=torch.zeros(2, 5, 8)), "v_prefix"),
        (dict(k_suffix=torch.zeros(3, 2, 6, 8)), "k_suffix must be"),
        (dict(k_suffix=torch.zeros(2, 2, 2, 8), v_suffix=torch.zeros(2, 2, 2, 8)), "S=2 must be >= .* T=3"),
        (dict(v_suffix=torch.zeros(2, 2, 6, 8, dtype=torch.float64)), "dtype"),
    ],
)
def test_bad_shapes_raise_clear_errors(bad, match):
    args = dict(
        q=torch.zeros(2, 2, 3, 8),
        k_prefix=torch.zeros(2, 4, 8),
        v_prefix=torch.zeros(2, 4, 8),
        k_suffix=torch.zeros(2, 2, 6, 8),
        v_suffix=torch.zeros(2, 2, 6, 8),
    )
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        shared_prefix_attention(**args)


# ---------------------------------------------------------------- sampling


def random_logits(num_rows, vocab, seed, spread=3.0):
    return torch.randn(num_rows, vocab, generator=torch.Generator().manual_seed(seed)) * spread  # (B, V)


def test_greedy_and_top_k_1_equal_argmax():
    logits = random_logits(32, 1000, seed=1)
    gen = torch.Generator().manual_seed(0)
    for kwargs in (dict(temperature=0.0), dict(temperature=0.0, top_k=50, top_p=0.5), dict(top_k=1)):
        tokens, _ = sample(logits, generator=gen, **kwargs)
        assert tokens.dtype == torch.int64
        assert torch.equal(tokens, logits.argmax(dim=-1)), kwargs


def test_per_row_greedy_mixed_with_sampling():
    logits = random_logits(8, 50, seed=2, spread=0.1)  # flat: sampled rows rarely hit argmax
    temperature = torch.tensor([0.0, 1.0] * 4)  # (B,)
    tokens, _ = sample(logits, temperature=temperature, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens[0::2], logits[0::2].argmax(dim=-1))
    assert not torch.equal(tokens[1::2], logits[1::2].argmax(dim=-1))


def test_reproducible_for_a_seed():
    logits = random_logits(64, 500, seed=3, spread=1.0)
    kwargs = dict(temperature=0.8, top_k=100, top_p=0.9)
    a, la = sample(logits, generator=torch.Generator().manual_seed(7), **kwargs)
    b, lb = sample(logits, generator=torch.Generator().manual_seed(7), **kwargs)
    c, _ = sample(logits, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_are_unscaled_log_softmax_at_chosen_tokens(dtype):
    logits = random_logits(16, 300, seed=4).to(dtype)
    tokens, logprobs = sample(logits, temperature=0.6, top_k=20, top_p=0.8, generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    torch.testing.assert_close(logprobs, expected)
    assert (sampling_probs(logits, 0.6, 20, 0.8).gather(1, tokens[:, None]) > 0).all()


@pytest.mark.parametrize(
    "params",
    [dict(), dict(temperature=0.5, top_k=5), dict(temperature=1.5, top_p=0.8), dict(temperature=0.9, top_k=12, top_p=0.7)],
    ids=str,
)
def test_empirical_frequencies_match_filtered_distribution(params):
    num_draws, vocab = 40_000, 20
    logits = random_logits(1, vocab, seed=5, spread=1.5)  # (1, V)
    expected = sampling_probs(logits, **params)[0]  # (V,)
    tokens, _ = sample(logits.expand(num_draws, vocab), generator=torch.Generator().manual_seed(11), **params)
    freq = torch.bincount(tokens, minlength=vocab).double() / num_draws  # (V,)
    assert (freq[expected == 0] == 0).all(), "a filtered-out token was drawn"
    total_variation = 0.5 * (freq - expected.double()).abs().sum().item()
    # Sampling noise alone gives about 0.01 here; a wrong temperature or filter gives > 0.05.
    assert total_variation < 0.025, (total_variation, freq, expected)


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.77, 0.95, 0.999])
def test_top_p_keeps_smallest_set_with_enough_mass(top_p):
    logits = random_logits(10, 200, seed=6, spread=2.0)
    probs = torch.softmax(logits.double() / 0.7, dim=-1)  # (B, V) the unfiltered distribution
    kept = sampling_probs(logits, temperature=0.7, top_p=top_p) > 0  # (B, V)
    for row in range(logits.shape[0]):
        sorted_probs = probs[row].sort(descending=True).values  # (V,)
        smallest = int((sorted_probs.cumsum(0) < top_p).sum()) + 1  # tokens needed to reach p
        assert int(kept[row].sum()) == smallest
        assert probs[row][kept[row]].sum() >= top_p
        assert probs[row][kept[row]].min() >= probs[row][~kept[row]].max()  # the most likely ones


@pytest.mark.parametrize("top_p, num_kept", [(0.5, 1), (0.75, 2), (0.875, 3), (0.5001, 2), (0.9, 5)])
def test_top_p_mass_exactly_p_is_enough(top_p, num_kept):
    # Powers of two are exact in float32, so the mass reaches p exactly at the boundary.
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.0625, 0.0625]]))  # (1, V)
    kept = sampling_probs(logits, top_p=top_p)[0] > 0  # (V,)
    assert int(kept.sum()) == num_kept  # 5 at p=0.9: the last two tie, and ties are kept together


def test_top_p_applies_to_top_k_survivors():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])  # (1, V)
    probs = sampling_probs(logits, top_k=3, top_p=0.9)[0]
    top3 = torch.softmax(logits[0, :3], dim=-1)  # renormalised over the top-k survivors
    needed = int((top3.cumsum(0) < 0.9).sum()) + 1
    assert int((probs > 0).sum()) == needed
    torch.testing.assert_close(probs[:needed], torch.softmax(logits[0, :needed], dim=-1))


def test_per_row_parameters_equal_separate_calls():
    logits = random_logits(4, 100, seed=7)
    temperature, top_k, top_p = torch.tensor([0.0, 0.5, 1.0, 2.0]), torch.tensor([0, 10, 3, 0]), torch.tensor([1.0, 0.9, 1.0, 0.5])
    together = sampling_probs(logits, temperature, top_k, top_p)
    for row in range(4):
        alone = sampling_probs(logits[row : row + 1], float(temperature[row]), int(top_k[row]), float(top_p[row]))
        torch.testing.assert_close(together[row], alone[0])


@pytest.mark.parametrize("top_p", [1.0, 0.9999999])
def test_banned_tokens_with_minus_inf_logits_are_never_drawn(top_p):
    logits = random_logits(2000, 8, seed=9, spread=0.01)  # (B, V) almost uniform
    logits[:, [0, 5]] = float("-inf")  # e.g. PAD and BOS
    tokens, logprobs = sample(logits, top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert not bool(((tokens == 0) | (tokens == 5)).any())
    assert bool(torch.isfinite(logprobs).all())
    assert bool((sampling_probs(logits, top_p=top_p)[:, [0, 5]] == 0).all())


def test_top_k_at_or_above_vocab_is_off():
    logits = random_logits(3, 10, seed=8)
    torch.testing.assert_close(sampling_probs(logits, top_k=10), torch.softmax(logits, dim=-1))
    torch.testing.assert_close(sampling_probs(logits, top_k=1000), torch.softmax(logits, dim=-1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=torch.ones(3)), r"temperature must be a scalar or shape \(4,\)"),
    ],
)
def test_bad_sampling_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(torch.zeros(4, 10), **kwargs)
