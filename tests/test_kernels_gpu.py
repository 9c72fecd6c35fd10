"""Triton kernels against the torch references.

Two modes, each skipped when unavailable:
- ``cuda`` (marked ``gpu``): CUDA tensors, needs a GPU and triton.
- ``interpret``: CPU tensors through Triton's interpreter, when triton imports
  and ``TRITON_INTERPRET=1`` is set before the run (slow: small shapes only), e.g.
  ``TRITON_INTERPRET=1 python -m pytest tests/test_kernels_gpu.py -q -k interpret``.
"""

from __future__ import annotations

import os

import pytest
import torch

from ponder.kernels import sample, sampling_probs, shared_prefix_attention, triton_available
from ponder.kernels.prefix_attention import shared_prefix_attention_torch

torch.set_num_threads(1)

HAS_CUDA = torch.cuda.is_available() and triton_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and triton_available()

MODES = [
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA and triton")]),
    pytest.param("interpret", marks=pytest.mark.skipif(not INTERPRET, reason="needs triton and TRITON_INTERPRET=1")),
]


@pytest.fixture(params=MODES)
def device(request):
    return "cuda" if request.param == "cuda" else "cpu"


def _attention_triton(*args, **kwargs):
    from ponder.kernels.triton_prefix_attention import shared_prefix_attention_triton

    return shared_prefix_attention_triton(*args, **kwargs)


def _sample_triton(*args, **kwargs):
    from ponder.kernels.triton_sampling import sample_triton

    return sample_triton(*args, **kwargs)


def make_inputs(n, num_heads, p, s, t, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    q = randn(n, num_heads, t, d)  # (n, H, T, D)
    return q, randn(num_heads, p, d), randn(num_heads, p, d), randn(n, num_heads, s, d), randn(n, num_heads, s, d)


TOLERANCE = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}

# (n, H, P, S, T, D); the interpreter runs every program in numpy, so its shapes stay small.
SHAPES_INTERPRET = [
    (1, 1, 0, 1, 1, 32),
    (3, 2, 5, 4, 4, 64),
    (4, 1, 70, 20, 1, 32),
    (2, 1, 130, 70, 18, 128),
    (5, 2, 17, 3, 2, 80),  # head size that is no power of two
]
SHAPES_CUDA = SHAPES_INTERPRET + [
    (64, 8, 2048, 1, 1, 128),
    (64, 4, 4096, 16, 16, 64),
    (16, 2, 1024, 256, 256, 64),
    (33, 3, 1000, 100, 37, 32),
    (64, 2, 0, 256, 1, 128),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_attention_matches_torch_reference(device, dtype):
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter gets bf16 tl.dot wrong (numpy has no bf16); checked on CUDA only")
    for shape in SHAPES_CUDA if device == "cuda" else SHAPES_INTERPRET:
        inputs = make_inputs(*shape, dtype=dtype, device=device, seed=sum(shape))
        expected = shared_prefix_attention_torch(*[x.float() for x in inputs])  # (n, H, T, D)
        out = _attention_triton(*inputs)
        assert out.shape == inputs[0].shape and out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, **TOLERANCE[dtype], msg=lambda m: f"{shape}: {m}")


def test_attention_non_contiguous_and_scale(device):
    q, kp, vp, ks, vs = make_inputs(3, 2, 40, 9, 3, 32, torch.float32, device)
    q_nc = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    ks_nc = ks.transpose(0, 2).contiguous().transpose(0, 2)
    out = _attention_triton(q_nc, kp, vp, ks_nc, vs, scale=0.2)
    torch.testing.assert_close(out, shared_prefix_attention_torch(q, kp, vp, ks, vs, scale=0.2), **TOLERANCE[torch.float32])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA and triton")
def test_public_api_dispatches_to_triton_and_stores_prefix_once():
    n, num_heads, p, d = 64, 8, 4096, 128
    inputs = make_inputs(n, num_heads, p, 16, 1, d, torch.float16, "cuda")
    torch.testing.assert_close(shared_prefix_attention(*inputs), _attention_triton(*inputs), atol=0, rtol=0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    shared_prefix_attention(*inputs)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    duplicated_kv = 2 * n * num_heads * p * d * 2  # bytes a per-sibling copy of the prefix KV takes
    assert extra < duplicated_kv / 50, (extra, duplicated_kv)


def test_greedy_and_top_k_1_equal_argmax(device):
    logits = torch.randn(16, 5000, generator=torch.Generator().manual_seed(1)).to(device)  # (B, V) > one block
    for kwargs in (dict(temperature=0.0), dict(temperature=0.0, top_p=0.3), dict(top_k=1)):
        tokens, logprobs = _sample_triton(logits, **kwargs)
        assert torch.equal(tokens, logits.argmax(dim=-1)), kwargs
        torch.testing.assert_close(logprobs, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1))


def test_sampling_reproducible_and_logprobs(device):
    logits = torch.randn(32, 300, generator=torch.Generator().manual_seed(2)).to(device=device, dtype=torch.bfloat16)
    kwargs = dict(temperature=torch.linspace(0.0, 1.5, 32), top_k=50, top_p=0.9)

    def draw(seed):
        return _sample_triton(logits, generator=torch.Generator(device=device).manual_seed(seed), **kwargs)

    (a, la), (b, lb), (c, _) = draw(3), draw(3), draw(4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    expected = torch.log_softmax(logits.float(), -1).gather(1, a[:, None]).squeeze(1)
    torch.testing.assert_close(la, expected)
    assert (sampling_probs(logits, **kwargs).gather(1, a[:, None]) > 0).all()


def test_banned_tokens_never_drawn(device):
    logits = (torch.randn(256, 8, generator=torch.Generator().manual_seed(6)) * 0.01).to(device)  # (B, V)
    logits[:, [0, 5]] = float("-inf")
    tokens, logprobs = _sample_triton(logits, top_p=0.9999999, generator=torch.Generator(device=device).manual_seed(0))
    assert not bool(((tokens == 0) | (tokens == 5)).any()) and bool(torch.isfinite(logprobs).all())


@pytest.mark.parametrize("params", [dict(), dict(temperature=0.5, top_k=5), dict(temperature=1.3, top_p=0.7)], ids=str)
def test_sampling_frequencies_match_filtered_distribution(device, params):
    num_draws, vocab = (40_000, 20) if device == "cuda" else (2_000, 20)
    logits = (torch.randn(1, vocab, generator=torch.Generator().manual_seed(5)) * 1.5).to(device)  # (1, V)
    expected = sampling_probs(logits, **params)[0].double()  # (V,)
    gen = torch.Generator(device=device).manual_seed(11)
    tokens, _ = _sample_triton(logits.expand(num_draws, vocab), generator=gen, **params)
    freq = torch.bincount(tokens, minlength=vocab).double() / num_draws  # (V,)
    assert (freq[expected == 0] == 0).all(), "a filtered-out token was drawn"
    bound = 0.025 if num_draws >= 40_000 else 0.1  # about 2.5x the sampling noise
    assert 0.5 * (freq - expected).abs().sum().item() < bound


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA and triton")
def test_public_sample_dispatches_to_triton():
    logits = torch.randn(8, 1000, device="cuda")
    a = sample(logits, 0.7, 0, 1.0, torch.Generator(device="cuda").manual_seed(0))
    b = _sample_triton(logits, 0.7, 0, 1.0, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(a[0], b[0])
