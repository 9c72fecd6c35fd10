"""Shared-prefix (cascade) attention for the siblings of one tree node.

When a node is expanded into ``n`` children, every child attends to the same
prefix (the path from the root to the node) plus its own suffix (the tokens
it generated itself). Naive batched attention copies the prefix KV ``n`` times;
here the prefix KV is stored once, attended by the queries of all siblings at
once, and the partial result is merged with each sibling's suffix attention
through their log-sum-exp (the "cascade" merge of FlashInfer). The merge is
exact: softmax over the concatenation [prefix, suffix] equals

    out = (e^{lse_p} * out_p + e^{lse_s} * out_s) / (e^{lse_p} + e^{lse_s}).

Positions: the queries of a sibling are its last ``T`` suffix positions
``S - T .. S - 1``; query ``t`` sees the whole prefix and suffix keys
``0 .. S - T + t`` (causal within the suffix).

``shared_prefix_attention`` dispatches to the Triton kernel for CUDA tensors
when triton imports, and to the torch reference otherwise; its ``kernels``
argument forces one path (``ponder.kernels.select``).
"""

from __future__ import annotations

import math

import torch

from ponder.kernels.common import check_attention_shapes
from ponder.kernels.select import resolve_kernels

__all__ = [
    "shared_prefix_attention",
    "shared_prefix_attention_torch",
    "merge_attention_states",
]


def merge_attention_states(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results over disjoint key sets.

    Args:
        out_a, out_b: (..., D) float32 attention outputs, each normalised over its own keys.
        lse_a, lse_b: (...) float32 log-sum-exp of the scaled scores over those keys;
            ``-inf`` marks an empty key set (its output is ignored).

    Returns:
        (out, lse): (..., D) the attention over the union of the keys, (...) its log-sum-exp.
    """
    lse = torch.logaddexp(lse_a, lse_b)  # (...)
    # Both -inf would give NaN weights; callers guarantee one side is non-empty.
    w_a = torch.exp(lse_a - lse).unsqueeze(-1)  # (..., 1)
    w_b = torch.exp(lse_b - lse).unsqueeze(-1)  # (..., 1)
    # where() keeps an ignored side's garbage (even NaN) out of the sum.
    out = torch.where(w_a > 0, w_a * out_a, 0.0) + torch.where(w_b > 0, w_b * out_b, 0.0)
    return out, lse


_MAX_SCORE_ELEMENTS = 1 << 20  # 4 MiB of float32 scores per prefix chunk


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp; q is already scaled. q (..., M, D), k, v (..., N, D).

    Without autograd, exp runs in place on the one score buffer, so the largest
    temporary is a single (..., M, N).
    """
    scores = torch.matmul(q, k.transpose(-1, -2))  # (..., M, N)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))  # every row keeps at least one key
    row_max = scores.amax(dim=-1, keepdim=True)  # (..., M, 1)
    if scores.requires_grad:  # autograd needs its saved tensors intact: no in-place ops
        probs = torch.exp(scores - row_max)  # (..., M, N) unnormalised
        row_sum = probs.sum(dim=-1, keepdim=True)  # (..., M, 1)
        out = torch.matmul(probs, v) / row_sum  # (..., M, D)
    else:
        probs = scores.sub_(row_max).exp_()  # (..., M, N) unnormalised
        row_sum = probs.sum(dim=-1, keepdim=True)  # (..., M, 1)
        out = torch.matmul(probs, v).div_(row_sum)  # (..., M, D)
    lse = (row_max + torch.log(row_sum)).squeeze(-1)  # (..., M)
    return out, lse


def _prefix_part(
    q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All siblings' (scaled) queries against the one copy of the prefix, one matmul per head."""
    n, num_heads, t, d = q.shape
    # Stack the queries of all siblings: the prefix is read once for n*T rows.
    q_rows = q.permute(1, 0, 2, 3).reshape(num_heads, n * t, d)  # (H, n*T, D)
    # Row chunks bound the (H, rows, P) score buffer; rows are independent, so no merge.
    rows_per_chunk = max(1, _MAX_SCORE_ELEMENTS // (num_heads * k_prefix.shape[1]))
    parts = [_attend(chunk, k_prefix, v_prefix) for chunk in q_rows.split(rows_per_chunk, dim=1)]
    if len(parts) == 1:
        out, lse = parts[0]  # (H, n*T, D), (H, n*T)
    else:
        out = torch.cat([o for o, _ in parts], dim=1)  # (H, n*T, D)
        lse = torch.cat([l for _, l in parts], dim=1)  # (H, n*T)
    out = out.reshape(num_heads, n, t, d).permute(1, 0, 2, 3)  # (n, H, T, D)
    lse = lse.reshape(num_heads, n, t).permute(1, 0, 2)  # (n, H, T)
    return out, lse


def _suffix_part(
    q: torch.Tensor, k_suffix: torch.Tensor, v_suffix: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sibling's (scaled) queries against its own suffix, causal."""
    t, s = q.shape[2], k_suffix.shape[2]
    query_pos = torch.arange(s - t, s, device=q.device).unsqueeze(1)  # (T, 1)
    key_pos = torch.arange(s, device=q.device).unsqueeze(0)  # (1, S)
    # Query t sits at suffix position S-T+t, so it always sees key 0: no empty rows.
    visible = key_pos <= query_pos  # (T, S)
    return _attend(q, k_suffix, v_suffix, None if t == 1 else visible)  # (n, H, T, D), (n, H, T)


def shared_prefix_attention_torch(
    q: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Torch reference of :func:`shared_prefix_attention` (any device); same arguments.

    Computes in float32 (inputs of lower precision are upcast) and returns the input dtype.
    """
    check_attention_shapes(q, k_prefix, v_prefix, k_suffix, v_suffix)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    dtype = q.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    q = q.to(compute) * scale  # (n, H, T, D) scaled once here, not the (.., T, P) scores
    out_s, lse_s = _suffix_part(q, k_suffix.to(compute), v_suffix.to(compute))  # (n, H, T, D), (n, H, T)
    if k_prefix.shape[1] == 0:
        return out_s.to(dtype)
    out_p, lse_p = _prefix_part(q, k_prefix.to(compute), v_prefix.to(compute))
    out, _ = merge_attention_states(out_p, lse_p, out_s, lse_s)  # (n, H, T, D)
    return out.to(dtype)


def shared_prefix_attention(
    q: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
    scale: float | None = None,
    kernels: str = "auto",
) -> torch.Tensor:
    """Attention of ``n`` siblings over one shared prefix plus their own suffixes.

    The prefix KV is stored and read once for all siblings; nothing of it is
    duplicated per sibling.

    Args:
        q: (n, H, T, D) queries: the last T positions of each sibling's suffix.
        k_prefix: (H, P, D) keys of the shared prefix (P may be 0).
        v_prefix: (H, P, D) values of the shared prefix.
        k_suffix: (n, H, S, D) each sibling's own keys, S >= T.
        v_suffix: (n, H, S, D) each sibling's own values.
        scale: score scale; default 1 / sqrt(D).
        kernels: ``"auto"`` (Triton for CUDA tensors when triton imports, else torch),
            ``"torch"`` or ``"triton"``.

    Returns:
        (n, H, T, D) attention output in q's dtype. Query t (suffix position
        S - T + t) attends to the whole prefix and to suffix keys 0 .. S - T + t.

    Raises:
        ValueError: shapes, dtypes or devices disagree (the message names the tensor),
            or ``kernels`` names a path that cannot run on q's device.
    """
    check_attention_shapes(q, k_prefix, v_prefix, k_suffix, v_suffix)
    if resolve_kernels(kernels, q.device) == "triton":
        # Lazy: triton is optional, and the module compiles kernels on import.
        from ponder.kernels.triton_prefix_attention import shared_prefix_attention_triton

        return shared_prefix_attention_triton(q, k_prefix, v_prefix, k_suffix, v_suffix, scale)
    return shared_prefix_attention_torch(q, k_prefix, v_prefix, k_suffix, v_suffix, scale)
