"""The embedded verifier: a process reward model (PRM).

The generator's trunk with a value head: at every position it predicts the
probability that the path so far ends in a right answer. A step's score is that
prediction at the step's closing delimiter. Training starts from the trained
generator's trunk (``from_generator``), which already reads the arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ponder.models.gpt import GPT, GPTConfig, Transformer, _init_weights, model_spec
from ponder.models.kv_cache import GroupCache
from ponder.search.flops import ModelSpec


class ProcessRewardModel(nn.Module):
    """Trunk plus a scalar value head; ``forward`` gives per-position value logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.value_head = nn.Linear(config.n_embd, 1)
        self.apply(_init_weights)

    @classmethod
    def from_generator(cls, generator: GPT) -> "ProcessRewardModel":
        """A PRM whose trunk starts as a copy of ``generator``'s."""
        prm = cls(generator.config)
        prm.transformer.load_state_dict(generator.transformer.state_dict())
        return prm

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None,
                target: torch.Tensor | None = None):
        """idx (B, T) -> value logits (B, T); with mask/target (B, T) also the mean BCE loss at masked positions."""
        logits = self.value_head(self.transformer(idx)).squeeze(-1)  # (B, T)
        if target is None:
            return logits, None
        loss = F.binary_cross_entropy_with_logits(logits[mask], target[mask])
        return logits, loss

    def forward_groups(self, idx: torch.Tensor, groups: list[GroupCache]) -> torch.Tensor:
        """Cached scoring: idx (R, T) -> scores in [0, 1], (R, T)."""
        hidden = self.transformer.forward_groups(idx, groups)  # (R, T, C)
        return torch.sigmoid(self.value_head(hidden).squeeze(-1))

    def model_spec(self, name: str = "embedded-prm") -> ModelSpec:
        """What ``ponder.search.flops`` needs: non-embedding params (head included), layers, width."""
        head = sum(p.numel() for p in self.value_head.parameters())
        return model_spec(self.transformer, name, extra_params=head)
