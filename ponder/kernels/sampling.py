"""Token sampling for tree expansion: temperature, top-k, top-p, one draw a row.

Semantics, shared by the torch reference and the Triton kernel:
1. Temperature: scaled = logits / temperature; temperature 0 means greedy
   (argmax of the raw logits, top-k/top-p ignored).
2. Top-k (0 = off): keep the tokens whose scaled logit is >= the k-th largest.
3. Top-p (1.0 = off): over the top-k survivors, renormalised, keep the smallest
   set of most likely tokens whose mass is >= p.
Both filters are expressed as one per-row cutoff on the scaled logits (a token is
kept iff ``scaled >= cutoff``, ``ponder.kernels.common.sampling_cutoffs``), so tokens
tied with the last kept one are kept too.
4. Draw with the Gumbel-max trick, argmax(scaled + Gumbel noise) over the kept
   tokens, which samples exactly from softmax of the kept scaled logits.
The returned logprob is that of the chosen token under the model's unscaled
distribution, log_softmax(logits), which is what a PRM-free scorer and the
trace recorder want, whatever filter produced the draw.
"""

from __future__ import annotations

import torch

from ponder.kernels.common import ParamLike, expand_params, sampling_cutoffs, scale_logits
from ponder.kernels.select import resolve_kernels

__all__ = ["sample", "sample_torch", "sampling_probs"]


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
    kernels: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token a row with temperature, top-k and top-p, and its logprob.

    Args:
        logits: (B, V) raw next-token logits (any float dtype).
        temperature: scalar or (B,) tensor, >= 0; 0 means greedy.
        top_k: scalar or (B,) tensor, >= 0; 0 means off.
        top_p: scalar or (B,) tensor in (0, 1]; 1 means off.
        generator: a torch.Generator on logits' device; the same generator state
            gives the same tokens (on one device and path).
        kernels: ``"auto"`` (Triton for CUDA logits when triton imports, else torch),
            ``"torch"`` or ``"triton"``; the two paths draw from the same distribution
            with different random streams.

    Returns:
        (token_ids, logprobs): (B,) int64 and (B,) float32, the logprob of each
        chosen token under log_softmax(logits) (unscaled, unfiltered).

    Raises:
        ValueError: a parameter out of range or of the wrong shape (the message names it),
            or ``kernels`` names a path that cannot run on the logits' device.
    """
    if resolve_kernels(kernels, logits.device) == "triton":
        # Lazy: triton is optional, and the module compiles kernels on import.
        from ponder.kernels.triton_sampling import sample_triton

        return sample_triton(logits, temperature, top_k, top_p, generator)
    return sample_torch(logits, temperature, top_k, top_p, generator)
