"""Triton shared-prefix (cascade) attention: two kernels, the merge fused into the second.

1. ``_prefix_kernel``: one program per (block of query rows, head). The rows are the
   queries of *all* siblings stacked (n*T rows), so every prefix KV block is loaded
   once per row block and used by up to BLOCK_M queries of different siblings; the
   prefix is never copied per sibling. Writes the normalised partial output and its
   log-sum-exp (base 2) per row.
2. ``_suffix_kernel``: one program per (query block, sibling*head). Its online-softmax
   state starts from the prefix result (m = lse, l = 1, acc = prefix output), which
   is exactly the cascade merge, then runs causally over the sibling's own suffix.

Scores are kept in base-2 units (scale * log2(e) folded into the scale) so the
inner loops use exp2. This module imports triton at import time: import it only
through ``ponder.kernels.shared_prefix_attention``, which checks first.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ponder.kernels.common import check_attention_shapes

LOG2E = 1.4426950408889634


@triton.jit
def _online_softmax_step(q, k_t, v, mask, m_i, l_i, acc, qk_scale, PRECISION: tl.constexpr):
    """One key block of online softmax. q (M, D), k_t (D, N), v (N, D), mask (M, N)."""
    s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale  # (M, N) base-2 scores
    s = tl.where(mask, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))  # (M,)
    # Rows whose state is still empty and whose block is fully masked keep m = -inf; shift by 0.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # (M,)
    alpha = tl.exp2(m_i - m_safe)  # (M,) rescales what was accumulated so far
    p = tl.exp2(s - m_safe[:, None])  # (M, N)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)  # (M, D)
    return m_new, l_i, acc


@triton.jit
def _prefix_kernel(
    Q, K, V, O, LSE,
    stride_qn, stride_qh, stride_qt, stride_qd,
    stride_kh, stride_kp, stride_kd,
    stride_vh, stride_vp, stride_vd,
    stride_oh, stride_or, stride_od,
    stride_lh, stride_lr,
    num_rows, num_queries, prefix_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (M,) row = sibling * T + t
    row_ok = rows < num_rows
    sibling, t = rows // num_queries, rows % num_queries  # (M,), (M,)
    d = tl.arange(0, BLOCK_D)  # (D,)
    d_ok = d < HEAD_DIM
    q_ptrs = Q + sibling[:, None] * stride_qn + head * stride_qh + t[:, None] * stride_qt + d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (M, D)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # (M,) running max, base 2
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # (M,) running sum of exp2
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)  # (M, D)
    for start in range(0, prefix_len, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)  # (N,)
        key_ok = keys < prefix_len
        k_ptrs = K + head * stride_kh + keys[None, :] * stride_kp + d[:, None] * stride_kd
        k_t = tl.load(k_ptrs, mask=key_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
        v_ptrs = V + head * stride_vh + keys[:, None] * stride_vp + d[None, :] * stride_vd
        v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0)  # (N, D)
        mask = row_ok[:, None] & key_ok[None, :]  # (M, N)
        m_i, l_i, acc = _online_softmax_step(q, k_t, v, mask, m_i, l_i, acc, qk_scale, PRECISION)

    l_safe = tl.where(l_i > 0, l_i, 1.0)  # padding rows only
    out = acc / l_safe[:, None]  # (M, D)
    o_ptrs = O + head * stride_oh + rows[:, None] * stride_or + d[None, :] * stride_od
    tl.store(o_ptrs, out, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + head * stride_lh + rows * stride_lr, m_i + tl.log2(l_safe), mask=row_ok)


@triton.jit
def _suffix_kernel(
    Q, K, V, OP, LSEP, OUT,
    stride_qn, stride_qh, stride_qt, stride_qd,
    stride_kn, stride_kh, stride_ks, stride_kd,
    stride_vn, stride_vh, stride_vs, stride_vd,
    stride_ph, stride_pr, stride_pd,
    stride_lh, stride_lr,
    stride_on, stride_oh, stride_ot, stride_od,
    num_heads, num_queries, suffix_len, qk_scale,
    HAS_PREFIX: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    sibling, head = tl.program_id(1) // num_heads, tl.program_id(1) % num_heads
    t = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (M,) query index
    t_ok = t < num_queries
    query_pos = suffix_len - num_queries + t  # (M,) position in the suffix
    d = tl.arange(0, BLOCK_D)  # (D,)
    d_ok = d < HEAD_DIM
    row_mask = t_ok[:, None] & d_ok[None, :]  # (M, D)
    q_ptrs = Q + sibling * stride_qn + head * stride_qh + t[:, None] * stride_qt + d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_mask, other=0.0)  # (M, D)

    if HAS_PREFIX:
        # The cascade merge: continue the online softmax from the prefix's final state.
        rows = sibling * num_queries + t  # (M,) row in the prefix kernel's output
        p_ptrs = OP + head * stride_ph + rows[:, None] * stride_pr + d[None, :] * stride_pd
        acc = tl.load(p_ptrs, mask=row_mask, other=0.0)  # (M, D) float32
        m_i = tl.load(LSEP + head * stride_lh + rows * stride_lr, mask=t_ok, other=0.0)  # (M,)
        l_i = tl.full((BLOCK_M,), 1.0, tl.float32)  # (M,)
    else:
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    # Causal: this block's last query sees keys up to its own position, nothing after.
    key_end = tl.minimum(suffix_len, suffix_len - num_queries + (pid_m + 1) * BLOCK_M)
    for start in range(0, key_end, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)  # (N,)
        key_ok = keys < suffix_len
        k_ptrs = K + sibling * stride_kn + head * stride_kh + keys[None, :] * stride_ks + d[:, None] * stride_kd
        k_t = tl.load(k_ptrs, mask=key_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
        v_ptrs = V + sibling * stride_vn + head * stride_vh + keys[:, None] * stride_vs + d[None, :] * stride_vd
        v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0)  # (N, D)
        mask = key_ok[None, :] & (keys[None, :] <= query_pos[:, None])  # (M, N)
        m_i, l_i, acc = _online_softmax_step(q, k_t, v, mask, m_i, l_i, acc, qk_scale, PRECISION)

    out = acc / l_i[:, None]  # (M, D); l >= 1 term: key 0 is visible to every query
    o_ptrs = OUT + sibling * stride_on + head * stride_oh + t[:, None] * stride_ot + d[None, :] * stride_od
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_mask)


def _precision(dtype: torch.dtype) -> str | None:
    # float32 inputs get exact fp32 dots so results match the torch path; tf32 would lose ~1e-3.
    # None leaves half-precision dots at Triton's default.
    return "ieee" if dtype == torch.float32 else None


def shared_prefix_attention_triton(
    q: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Triton version of :func:`ponder.kernels.shared_prefix_attention`; same arguments.

    Accepts float32, float16 and bfloat16 (accumulation is float32). Needs CUDA
    tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (used by the tests).
    """
    check_attention_shapes(q, k_prefix, v_prefix, k_suffix, v_suffix)
    n, num_heads, num_queries, head_dim = q.shape  # (n, H, T, D)
    prefix_len, suffix_len = k_prefix.shape[1], k_suffix.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    qk_scale = scale * LOG2E
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = _precision(q.dtype)
    out = torch.empty_like(q)  # (n, H, T, D)
    has_prefix = prefix_len > 0
    num_rows = n * num_queries
    # Per-row partial results of the prefix: query-sized, never prefix-sized.
    out_p = torch.empty((num_heads, num_rows, head_dim), device=q.device, dtype=torch.float32)  # (H, n*T, D)
    lse_p = torch.empty((num_heads, num_rows), device=q.device, dtype=torch.float32)  # (H, n*T)
    if has_prefix:
        block_m = 64 if num_rows > 32 else 16
        grid = (triton.cdiv(num_rows, block_m), num_heads)
        _prefix_kernel[grid](
            q, k_prefix, v_prefix, out_p, lse_p,
            *q.stride(), *k_prefix.stride(), *v_prefix.stride(), *out_p.stride(), *lse_p.stride(),
            num_rows, num_queries, prefix_len, qk_scale,
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=block_d, PRECISION=precision,
            num_warps=4 if block_d <= 64 else 8,
        )  # fmt: skip
    block_m = 16 if num_queries <= 16 else 64
    grid = (triton.cdiv(num_queries, block_m), n * num_heads)
    _suffix_kernel[grid](
        q, k_suffix, v_suffix, out_p, lse_p, out,
        *q.stride(), *k_suffix.stride(), *v_suffix.stride(), *out_p.stride(), *lse_p.stride(), *out.stride(),
        num_heads, num_queries, suffix_len, qk_scale,
        HAS_PREFIX=has_prefix, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=block_d,
        PRECISION=precision, num_warps=4,
    )  # fmt: skip
    return out
