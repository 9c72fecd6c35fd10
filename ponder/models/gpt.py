"""The embedded generator: a small decoder-only transformer (nanoGPT style).

Two forward paths share the same weights:
- ``forward(idx)``: plain causal attention over whole sequences, for training.
- ``forward_groups(idx, groups)``: incremental decoding over a KV cache where each
  group of sibling rows shares one prefix KV, attended once through
  ``ponder.kernels.shared_prefix_attention``; the projections and the MLP run
  batched over the rows of all groups at once. Which attention kernel runs (torch
  or Triton) is the trunk's ``kernels`` setting, like its device a property of
  where the model is served (``Transformer.use_kernels``).
Both give the same logits (tests/test_model.py checks it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ponder.kernels import resolve_kernels, shared_prefix_attention
from ponder.models.kv_cache import GroupCache
from ponder.search.flops import ModelSpec


@dataclass
class GPTConfig:
    vocab_size: int = 36  # set from the tokenizer's alphabet
    block_size: int = 256  # longest sequence: BOS + prompt + every step of a path
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # head_dim = n_embd / n_head = 32
    dropout: float = 0.0  # the traces are plentiful; dropout only slows CPU training

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        shape = (B, T, self.n_head, C // self.n_head)
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))  # each (B, nh, T, hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(x)  # (B, nh, T, hs)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward_groups(self, x: torch.Tensor, groups: list[GroupCache], layer: int,
                       kernels: str = "auto") -> torch.Tensor:
        """x (R, T, C): the new positions of every row; rows are the groups' rows in order."""
        R, T, C = x.shape
        q, k, v = self._heads(x)  # (R, nh, T, hs)
        outs, row = [], 0
        for group in groups:
            rows = slice(row, row + group.num_rows)
            k_suffix, v_suffix = group.append(layer, k[rows], v[rows])  # (n, nh, S, hs)
            k_prefix, v_prefix = group.prefix(layer)  # (nh, P, hs)
            outs.append(shared_prefix_attention(q[rows], k_prefix, v_prefix, k_suffix, v_suffix,
                                                kernels=kernels))  # (n, nh, T, hs)
            row += group.num_rows
        y = torch.cat(outs, dim=0)  # (R, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).reshape(R, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_groups(self, x: torch.Tensor, groups: list[GroupCache], layer: int,
                       kernels: str = "auto") -> torch.Tensor:
        x = x + self.attn.forward_groups(self.ln_1(x), groups, layer, kernels)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Embeddings, blocks and the final norm: the trunk the generator and the verifier share."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.kernels = "auto"  # forward_groups' attention path: auto | torch | triton

    def use_kernels(self, kernels: str) -> None:
        """Run ``forward_groups``' attention on the given kernel path from now on.

        Args:
            kernels: ``"auto"``, ``"torch"`` or ``"triton"`` (``ponder.kernels.select``);
                checked against the device the weights are on now, so move the model first.

        Raises:
            ValueError: an unknown path, or one that cannot run on the weights' device.
        """
        resolve_kernels(kernels, self.wte.weight.device)
        self.kernels = kernels

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids from position 0 -> (B, T, C) hidden states."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size={self.config.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def forward_groups(self, idx: torch.Tensor, groups: list[GroupCache]) -> torch.Tensor:
        """idx (R, T): the next T tokens of every row of ``groups`` -> (R, T, C) hidden states.

        Appends the new positions' keys and values to each group's suffix cache.
        """
        T = idx.shape[1]
        starts = [g.next_position for g in groups for _ in range(g.num_rows)]
        if max(starts) + T > self.config.block_size:
            raise ValueError(f"decoding past block_size={self.config.block_size}")
        pos = torch.tensor(starts, device=idx.device).unsqueeze(1) + torch.arange(T, device=idx.device)  # (R, T)
        x = self.wte(idx) + self.wpe(pos)  # (R, T, C)
        for layer, block in enumerate(self.h):
            x = block.forward_groups(x, groups, layer, self.kernels)
        for group in groups:
            group.advance(T)
        return self.ln_f(x)

    def num_body_params(self) -> int:
        """Parameters that cost a matmul per token (all but the embeddings)."""
        embeddings = self.wte.weight.numel() + self.wpe.weight.numel()
        return sum(p.numel() for p in self.parameters()) - embeddings


class GPT(nn.Module):
    """The generator: the trunk plus a language-model head tied to the token embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # scaled residual init (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V); with targets (B, T) also the mean loss (-100 = ignored)."""
        logits = self.lm_head(self.transformer(idx))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.transformer.wte.weight.t()  # (..., V) weight tying

    def forward_groups(self, idx: torch.Tensor, groups: list[GroupCache]) -> torch.Tensor:
        """Cached decoding step: idx (R, T) -> logits (R, T, V); see ``Transformer.forward_groups``."""
        return self.lm_head(self.transformer.forward_groups(idx, groups))

    def model_spec(self, name: str = "embedded-gpt") -> ModelSpec:
        """What ``ponder.search.flops`` needs: non-embedding params, layers and width."""
        return model_spec(self.transformer, name)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def model_spec(trunk: Transformer, name: str, extra_params: int = 0) -> ModelSpec:
    """The FLOP formula's view of a trunk (plus a head's ``extra_params``).

    Per token the forward costs ``2 * num_params`` for the weights plus
    ``2 * n_layer * n_embd * context`` for attention (``ponder.search.flops.flops``);
    the tied LM head's ``2 * n_embd * vocab`` is left out like the embeddings, as in
    Kaplan et al.'s non-embedding count.
    """
    config = trunk.config
    return ModelSpec(name, trunk.num_body_params() + extra_params, config.n_layer, config.n_embd)
