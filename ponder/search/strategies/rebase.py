"""REBASE: reward-balanced search (Wu et al. 2024, "Inference Scaling Laws").

The root draws ``width`` one-step samples. At every level after that, the
scored, unfinished frontier shares the level's width in proportion to a softmax
of its PRM values at temperature ``balance_temperature``: a node scored higher
is expanded with more samples, a low one may get none and is pruned. As in the
paper, every finished path uses up one unit of width for good, so the level
width is ``width`` minus the paths finished so far, and the search ends when it
reaches zero or the frontier is empty.

Widths are whole samples: the softmax shares are rounded by largest remainder,
so they always add up to the level width exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.search.aggregate import check_aggregation
from ponder.search.strategies.base import Answer, StrategyParams, register
from ponder.search.strategies.common import SELECTIONS, answer_from, check_at_least, check_choice
from ponder.search.strategies.levels import LevelSearch, LevelStrategy, ranked


@dataclass
class RebaseParams(StrategyParams):
    width: int = 16  # samples per level, less one per finished path
    balance_temperature: float = 0.1  # softmax temperature over frontier values; lower = greedier
    agg: str = "last"  # step-score aggregation giving each node its value: min | prod | last | mean
    selection: str = "weighted"  # final answer: weighted | majority | best over finished paths

    def validate(self) -> None:
        StrategyParams.validate(self)
        check_at_least("width", self.width, 1)
        if not self.balance_temperature > 0:
            raise ValueError(f"search.balance_temperature must be > 0, got {self.balance_temperature!r}")
        check_aggregation(self.agg)
        check_choice("selection", self.selection, SELECTIONS)


def softmax_widths(values: dict[int, float], total: int, temperature: float) -> dict[int, int]:
    """Split ``total`` samples over nodes in proportion to ``softmax(value / temperature)``.

    Args:
        values: node_id -> value (a PRM score).
        total: samples to hand out; the widths add up to exactly this.
        temperature: > 0; small values give nearly everything to the best node.

    Returns:
        node_id -> width, for nodes with a width of at least 1.
    """
    if total <= 0 or not values:
        return {}
    order = ranked(list(values), values)
    top = values[order[0]]
    weights = [math.exp((values[n] - top) / temperature) for n in order]  # shifted: no overflow
    norm = math.fsum(weights)
    shares = [total * w / norm for w in weights]
    widths = [math.floor(s) for s in shares]
    # Largest remainder; ties go to the better node (``order`` is best first).
    by_remainder = sorted(range(len(order)), key=lambda i: -(shares[i] - widths[i]))
    for i in by_remainder[: total - sum(widths)]:
        widths[i] += 1
    return {n: w for n, w in zip(order, widths) if w > 0}


@dataclass(frozen=True)
class Balance:
    """The REBASE policy: collect finished children, share the remaining width by softmax.

    A plain callable object rather than a closure, so a search in progress pickles.
    """

    temperature: float
    width: int

    def __call__(self, search: LevelSearch, children: list[int],
                 values: dict[int, float]) -> tuple[list[int], dict[int, int]]:
        tree = search.strategy.tree
        collected = [c for c in children if tree[c].is_terminal]
        remaining = self.width - len(search.terminals) - len(collected)
        frontier = {c: values[c] for c in children if not tree[c].is_terminal}
        return collected, softmax_widths(frontier, remaining, self.temperature)


@register
class Rebase(LevelStrategy):
    """Reward-balanced tree search; see the module docstring."""

    name = "rebase"
    Params = RebaseParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p: RebaseParams = self.params
        self.search = LevelSearch(self, start_id=0, first_width=p.width,
                                  select=Balance(p.balance_temperature, p.width),
                                  agg=p.agg, seed=self.seed_for())

    def answer(self) -> Answer:
        p: RebaseParams = self.params
        return answer_from(self, self.search.terminals, p.selection, p.agg,
                           num_levels=len(self.search.levels))
