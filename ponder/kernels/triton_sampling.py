"""Triton fused sampling: one pass over the vocabulary per row.

The top-k/top-p filter is a per-row cutoff on the scaled logits (see
``ponder.kernels.common``); it needs a sort only when a row turns a filter on,
and that sort runs in torch. Everything else is one kernel, one program per row,
that streams the row's logits once and in that pass
- accumulates the log-sum-exp of the raw logits (for the returned logprob),
- adds Gumbel noise from Philox (``tl.rand``) to the kept scaled logits,
- keeps a running argmax (the Gumbel-max draw, or the plain argmax when greedy).

Randomness: one Philox seed per row is drawn from the caller's torch.Generator,
so a generator state reproduces the tokens. ``tl.rand`` has 2^-31 resolution, so
the Gumbel noise is bounded above by about 16.6; that changes the outcome only in
events of probability below 1e-7 per token.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ponder.kernels.common import ParamLike, expand_params, filters_on, sampling_cutoffs, scale_logits


@triton.jit
def _sample_kernel(
    LOGITS, TEMP, CUTOFF, SEEDS, TOKENS, LOGPROBS,
    stride_b, vocab,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    row_ptr = LOGITS + row.to(tl.int64) * stride_b
    temp = tl.load(TEMP + row)
    greedy = temp == 0.0
    inv_temp = 1.0 / tl.where(greedy, 1.0, temp)
    cutoff = tl.where(greedy, float("-inf"), tl.load(CUTOFF + row))  # greedy ignores the filters
    seed = tl.load(SEEDS + row)
    lanes = tl.arange(0, BLOCK_V)  # (V_blk,)
    # Per-lane running state; lanes are reduced once at the end.
    m_vec = tl.full((BLOCK_V,), float("-inf"), tl.float32)  # (V_blk,) max of raw logits
    l_vec = tl.zeros((BLOCK_V,), tl.float32)  # (V_blk,) sum of exp(raw - m)
    best_val = tl.full((BLOCK_V,), float("-inf"), tl.float32)  # (V_blk,) best perturbed score
    best_idx = tl.zeros((BLOCK_V,), tl.int32)  # (V_blk,) its token id
    for start in range(0, vocab, BLOCK_V):
        offs = start + lanes  # (V_blk,)
        ok = offs < vocab
        x = tl.load(row_ptr + offs, mask=ok, other=float("-inf")).to(tl.float32)  # (V_blk,)
        m_new = tl.maximum(m_vec, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # lanes that saw only -inf
        l_vec = l_vec * tl.exp(m_vec - m_safe) + tl.exp(x - m_safe)
        m_vec = m_new
        scaled = x * inv_temp
        uniform = tl.rand(seed, offs)  # (V_blk,) in [0, 1)
        gumbel = -tl.log(-tl.log(uniform))  # uniform 0 gives -inf: never chosen
        score = tl.where(greedy, x, scaled + gumbel)
        keep = ok & (scaled >= cutoff)
        score = tl.where(keep, score, float("-inf"))
        better = score > best_val  # strict: the earliest token wins a tie within a lane
        best_idx = tl.where(better, offs, best_idx)
        best_val = tl.where(better, score, best_val)

    top = tl.max(best_val, 0)
    # Earliest token among lanes that tie at the top, as torch.argmax picks.
    token = tl.min(tl.where(best_val == top, best_idx, vocab), 0)
    token = tl.where(token == vocab, 0, token)  # all -inf (impossible for finite logits)
    m_row = tl.max(m_vec, 0)
    lse = m_row + tl.log(tl.sum(l_vec * tl.exp(m_vec - m_row), 0))
    chosen = tl.load(row_ptr + token).to(tl.float32)
    tl.store(TOKENS + row, token.to(tl.int64))
    tl.store(LOGPROBS + row, chosen - lse)


def sample_triton(
    logits: torch.Tensor,
    temperature: ParamLike = 1.0,
    top_k: ParamLike = 0,
    top_p: ParamLike = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of :func:`ponder.kernels.sample`; same arguments and results.

    Draws from the same distribution as the torch path, with a different random
    stream (so the same seed gives different, equally distributed tokens).
    Needs CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests).
    """
    temp, k, p = expand_params(logits, temperature, top_k, top_p)  # (B,) each
    num_rows, vocab = logits.shape
    if filters_on(k, p, vocab):
        cutoff = sampling_cutoffs(scale_logits(logits, temp), k, p)  # (B,)
    else:
        cutoff = torch.full((num_rows,), float("-inf"), device=logits.device)  # (B,)
    seeds = torch.randint(0, 2**31 - 1, (num_rows,), generator=generator, device=logits.device)  # (B,)
    if logits.stride(1) != 1:
        logits = logits.contiguous()  # (B, V) the kernel walks a row with unit stride
    tokens = torch.empty(num_rows, dtype=torch.int64, device=logits.device)  # (B,)
    logprobs = torch.empty(num_rows, dtype=torch.float32, device=logits.device)  # (B,)
    block_v = min(4096, triton.next_power_of_2(vocab))
    _sample_kernel[(num_rows,)](
        logits, temp, cutoff, seeds.to(torch.int32), tokens, logprobs,
        logits.stride(0), vocab,
        BLOCK_V=block_v, num_warps=8 if block_v >= 2048 else 4,
    )  # fmt: skip
    return tokens, logprobs
