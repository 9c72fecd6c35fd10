"""Token sampling for tree expansion: temperature, top-k, top-p, one draw a row.

Semantics, shared by the torch reference and the Triton kernel:
1. Temperature: scaled = logits / temperature; temperature 0 means greedy
   (argmax of the raw logits, top-k/top-p ignored).
2. Top-k (0 = off): keep the tokens whose scaled logit is >= the k-th largest.
3. Top-p (1.0 = off): over the top-k survivors, renormalised, keep the smallest
   set of most likely tokens whose mass is >= p.
Both filters are expressed as one per-row cutoff on the scaled logits (a token is
kept iff ``scaled >= cutoff``), so tokens tied with the last kept one are kept too.
4. Draw with the Gumbel-max trick, argmax(scaled + Gumbel noise) over the kept
   tokens, which samples exactly from softmax of the kept scaled logits.
The returned logprob is that of the chosen token under the model's unscaled
distribution, log_softmax(logits), which is what a PRM-free scorer and the
trace recorder want, whatever filter produced the draw.
"""

from __future__ import annotations

import torch

__all__ = [
    "sample",
    "sample_torch",
    "sampling_probs",
    "sampling_cutoffs",
    "expand_params",
    "filters_on",
    "scale_logits",
]

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


def _filtered(logits, temperature, top_k, top_p):
    temp, k, p = expand_params(logits, temperature, top_k, top_p)
    scaled = scale_logits(logits, temp)  # (B, V)
    cutoff = sampling_cutoffs(scaled, k, p)  # (B,)
    # -inf logits (banned tokens) stay out even when the cutoff is -inf.
    keep = (scaled >= cutoff.unsqueeze(1)) & (scaled > float("-inf"))  # (B, V)
    return temp, scaled, keep


def sampling_probs(
    logits: torch.Tensor, temperature: ParamLike = 1.0, top_k: ParamLike = 0, top_p: ParamLike = 1.0
) -> torch.Tensor:
    """The distribution that :func:`sample` draws from, for tests and analysis.

    Args: as :func:`sample`.

    Returns:
        (B, V) float32 probabilities: softmax of the kept scaled logits, zero
        elsewhere; a one-hot row at argmax(logits) where temperature is 0.
    """
    temp, scaled, keep = _filtered(logits, temperature, top_k, top_p)
    probs = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)  # (B, V)
    greedy = torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[1]).float()  # (B, V)
    return torch.where((temp == 0).unsqueeze(1), greedy, probs)


def sample_torch(
    logits: torch.Tensor,
    temperature: ParamLike = 1.0,
    top_k: ParamLike = 0,
    top_p: ParamLike = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`sample` (any device); same arguments and results."""
    temp, scaled, keep = _filtered(logits, temperature, top_k, top_p)
    greedy_rows = temp == 0  # (B,)
    tokens = logits.argmax(dim=-1)  # (B,) greedy choice
    if not bool(greedy_rows.all()):
        exp_noise = torch.empty_like(scaled).exponential_(generator=generator)  # (B, V) Exp(1)
        exp_noise.clamp_(min=torch.finfo(exp_noise.dtype).tiny)  # a 0 draw would give +inf noise
        # -log(Exp(1)) is Gumbel(0, 1); where() keeps a +inf draw off a removed token's -inf.
        perturbed = torch.where(keep, scaled - torch.log(exp_noise), float("-inf"))  # (B, V)
        tokens = torch.where(greedy_rows, tokens, perturbed.argmax(dim=-1))  # (B,)
    raw = logits.float()  # (B, V)
    logprobs = raw.gather(1, tokens.unsqueeze(1)).squeeze(1) - torch.logsumexp(raw, dim=-1)  # (B,)
    return tokens, logprobs


def sample(
    logits: torch.Tensor,
    temperature: ParamLike = 1.0,
    top_k: ParamLike = 0,
    top_p: ParamLike = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token a row with temperature, top-k and top-p, and its logprob.

    Args:
        logits: (B, V) raw next-token logits (any float dtype).
        temperature: scalar or (B,) tensor, >= 0; 0 means greedy.
        top_k: scalar or (B,) tensor, >= 0; 0 means off.
        top_p: scalar or (B,) tensor in (0, 1]; 1 means off.
        generator: a torch.Generator on logits' device; the same generator state
            gives the same tokens (on one device and path).

    Returns:
        (token_ids, logprobs): (B,) int64 and (B,) float32, the logprob of each
        chosen token under log_softmax(logits) (unscaled, unfiltered).

    Raises:
        ValueError: a parameter out of range or of the wrong shape (the message names it).
    """
    if logits.is_cuda:
        from ponder.kernels import triton_available

        if triton_available():
            from ponder.kernels.triton_sampling import sample_triton

            return sample_triton(logits, temperature, top_k, top_p, generator)
    return sample_torch(logits, temperature, top_k, top_p, generator)
