"""What the torch references and the Triton kernels share: input checks and the sampling filter.

Both versions of a kernel import these from here rather than from each other, so
the import graph stays one-way: ``common`` <- the torch references and the Triton
kernels; the public dispatchers (``prefix_attention.shared_prefix_attention``,
``sampling.sample``) import the Triton modules, never the reverse.
"""

from __future__ import annotations

import torch

__all__ = [
    "ParamLike",
    "check_attention_shapes",
    "expand_params",
    "filters_on",
    "sampling_cutoffs",
    "scale_logits",
]


def check_attention_shapes(
    q: torch.Tensor,
    k_prefix: torch.Tensor,
    v_prefix: torch.Tensor,
    k_suffix: torch.Tensor,
    v_suffix: torch.Tensor,
) -> None:
    """Raise ``ValueError`` naming the bad tensor unless the shapes agree.

    Expected: q (n, H, T, D); k_prefix, v_prefix (H, P, D);
    k_suffix, v_suffix (n, H, S, D) with S >= T >= 1 and n >= 1.
    """
    if q.dim() != 4:
        raise ValueError(f"q must be (n, H, T, D), got shape {tuple(q.shape)}")
    n, num_heads, t, d = q.shape
    if n < 1 or t < 1:
        raise ValueError(f"q needs n >= 1 siblings and T >= 1 queries, got shape {tuple(q.shape)}")
    for name, x in (("k_prefix", k_prefix), ("v_prefix", v_prefix)):
        if x.dim() != 3 or x.shape[0] != num_heads or x.shape[2] != d:
            raise ValueError(f"{name} must be (H={num_heads}, P, D={d}), got shape {tuple(x.shape)}")
    if v_prefix.shape != k_prefix.shape:
        raise ValueError(f"v_prefix {tuple(v_prefix.shape)} must match k_prefix {tuple(k_prefix.shape)}")
    for name, x in (("k_suffix", k_suffix), ("v_suffix", v_suffix)):
        if x.dim() != 4 or x.shape[0] != n or x.shape[1] != num_heads or x.shape[3] != d:
            raise ValueError(
                f"{name} must be (n={n}, H={num_heads}, S, D={d}), got shape {tuple(x.shape)}"
            )
    if v_suffix.shape != k_suffix.shape:
        raise ValueError(f"v_suffix {tuple(v_suffix.shape)} must match k_suffix {tuple(k_suffix.shape)}")
    if k_suffix.shape[2] < t:
        raise ValueError(f"suffix length S={k_suffix.shape[2]} must be >= number of queries T={t}")
    dtypes = {x.dtype for x in (q, k_prefix, v_prefix, k_suffix, v_suffix)}
    devices = {x.device for x in (q, k_prefix, v_prefix, k_suffix, v_suffix)}
    if len(dtypes) != 1 or len(devices) != 1:
        raise ValueError(f"all inputs must share one dtype and device, got {dtypes} on {devices}")


ParamLike = float | int | torch.Tensor


def _as_row_tensor(value: ParamLike, num_rows: int, dtype: torch.dtype, device, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.reshape(1).expand(num_rows)
        if value.shape != (num_rows,):
            raise ValueError(f"{name} must be a scalar or shape ({num_rows},), got {tuple(value.shape)}")
        return value.to(device=device, dtype=dtype)
    return torch.full((num_rows,), value, dtype=dtype, device=device)


def expand_params(
    logits: torch.Tensor, temperature: ParamLike, top_k: ParamLike, top_p: ParamLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the sampling parameters and broadcast each to one value a row.

    Returns:
        (temperature, top_k, top_p): (B,) float32, (B,) int64, (B,) float32.

    Raises:
        ValueError: a value out of range (temperature >= 0, top_k >= 0, 0 < top_p <= 1)
            or a per-row tensor of the wrong length.
    """
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (B, V) with V >= 1, got shape {tuple(logits.shape)}")
    num_rows, device = logits.shape[0], logits.device
    temp = _as_row_tensor(temperature, num_rows, torch.float32, device, "temperature")  # (B,)
    k = _as_row_tensor(top_k, num_rows, torch.int64, device, "top_k")  # (B,)
    p = _as_row_tensor(top_p, num_rows, torch.float32, device, "top_p")  # (B,)
    if bool((temp < 0).any()) or not bool(torch.isfinite(temp).all()):
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temp.tolist()}")
    if bool((k < 0).any()):
        raise ValueError(f"top_k must be >= 0 (0 = off), got {k.tolist()}")
    if bool(((p <= 0) | (p > 1)).any()):
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {p.tolist()}")
    return temp, k, p


def scale_logits(logits: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """(B, V) float32 logits / temperature; greedy rows (temperature 0) stay unscaled."""
    safe_temp = torch.where(temp > 0, temp, torch.ones_like(temp))  # (B,) greedy rows unscaled
    return logits.float() / safe_temp.unsqueeze(1)  # (B, V)


def filters_on(top_k: torch.Tensor, top_p: torch.Tensor, vocab: int) -> bool:
    """True when some row turns top-k or top-p on (only then is a sort needed)."""
    return bool((((top_k > 0) & (top_k < vocab)) | (top_p < 1.0)).any())


def sampling_cutoffs(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per-row cutoff on the scaled logits that implements top-k then top-p.

    Args:
        scaled: (B, V) float32 temperature-scaled logits.
        top_k: (B,) int64, 0 = off.
        top_p: (B,) float32 in (0, 1], 1 = off.

    Returns:
        (B,) float32; token v of row b is kept iff ``scaled[b, v] >= cutoff[b]``
        (``-inf`` where both filters are off).
    """
    num_rows, vocab = scaled.shape
    k_on = (top_k > 0) & (top_k < vocab)  # (B,)
    p_on = top_p < 1.0  # (B,)
    if not bool((k_on | p_on).any()):
        return torch.full((num_rows,), float("-inf"), device=scaled.device)  # (B,) no sort needed
    sorted_vals = torch.sort(scaled, dim=-1, descending=True).values  # (B, V)
    k = torch.where(k_on, top_k, torch.full_like(top_k, vocab))  # (B,)
    kth = sorted_vals.gather(1, (k - 1).unsqueeze(1))  # (B, 1)
    keep = sorted_vals >= kth  # (B, V) a prefix of the sorted row
    probs = torch.softmax(sorted_vals.masked_fill(~keep, float("-inf")), dim=-1)  # (B, V)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass of more likely tokens
    # Keep token i while the tokens before it hold less than p; the first is always kept.
    keep &= (mass_before < top_p.unsqueeze(1)) | ~p_on.unsqueeze(1)  # (B, V)
    num_kept = keep.sum(dim=-1)  # (B,) >= 1
    cutoff = sorted_vals.gather(1, (num_kept - 1).unsqueeze(1)).squeeze(1)  # (B,)
    return torch.where(k_on | p_on, cutoff, float("-inf"))
