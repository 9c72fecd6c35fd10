"""PRM beam search over reasoning steps (search-and-learn style).

Keep ``beam_width`` live beams. At each level every live beam is expanded with
``expansion_factor`` one-step samples, the new children are scored by the
verifier (optionally after a ``lookahead`` rollout of a few greedy steps), every
finished child is collected, and the ``beam_width`` best unfinished children
become the next beams. The search stops once ``num_terminals`` paths finished,
when no beam is left, or at max depth (a child at ``task.max_steps`` finishes).

Per-level compute is held at ``beam_width * expansion_factor`` samples: the root
draws them all (or ``root_samples``, when a weak policy needs a wider first
level to propose one good first step), and when fewer than ``beam_width`` beams
survive, the survivors share them (best first), as search-and-learn refills its
beam by duplicating survivors. Under a FLOP cap too small for that, ``pace``
narrows each level to what the cap has left (the weakest beams give up their
samples first), so the beam still finishes paths; see ``levels.py``.

The level loop itself is ``levels.LevelSearch``; this module only adds the top-k
policy, which DVTS reuses with width 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import check_aggregation
from ponder.search.strategies.base import Answer, StrategyParams, register
from ponder.search.strategies.common import SELECTIONS, answer_from, check_at_least, check_choice
from ponder.search.strategies.levels import LevelSearch, LevelStrategy, ranked, spread


@dataclass
class BeamParams(StrategyParams):
    beam_width: int = 4  # live beams kept per level
    expansion_factor: int = 4  # one-step samples per live beam per level
    num_terminals: int = 0  # stop after this many finished paths; 0 = beam_width
    lookahead: int = 0  # greedy rollout steps used to judge each child (0 = judge the child itself)
    lookahead_temperature: float = 0.0  # sampling temperature of rollout steps
    agg: str = "last"  # step-score aggregation ranking paths: min | prod | last | mean
    selection: str = "weighted"  # final answer: weighted | majority | best over finished paths
    filter_duplicates: bool = False  # True: a child whose step repeats a kept sibling's takes no beam slot
    root_samples: int = 0  # samples drawn from the root; 0 = beam_width * expansion_factor
    pace: bool = True  # under a FLOP cap, narrow each level to what the cap has left (levels.py)

    def validate(self) -> None:
        StrategyParams.validate(self)
        check_at_least("beam_width", self.beam_width, 1)
        check_at_least("expansion_factor", self.expansion_factor, 1)
        check_at_least("num_terminals", self.num_terminals, 0)
        check_at_least("root_samples", self.root_samples, 0)
        check_at_least("lookahead", self.lookahead, 0)
        check_at_least("lookahead_temperature", self.lookahead_temperature, 0.0)
        check_aggregation(self.agg)
        check_choice("selection", self.selection, SELECTIONS)


@dataclass(frozen=True)
class KeepTop:
    """The beam policy: the ``width`` best children survive and share the level's samples.

    A plain callable object rather than a closure, so a search in progress pickles.

    Args:
        width: children kept per level.
        samples_per_level: samples the survivors share at the next level.
        rank_terminals: if False (beam search), every finished child is collected and
            the best unfinished ones survive; if True (DVTS), finished children compete
            for the ``width`` slots and only those kept are collected.
        filter_duplicates: if True, a child with the same parent and step text as a
            better one is dropped before the slots are filled (search-and-learn's
            ``filter_duplicates``): at temperature 1 a small policy repeats its favourite
            step often, and duplicate beams grow the same subtree twice.
    """

    width: int
    samples_per_level: int
    rank_terminals: bool = False
    filter_duplicates: bool = False

    def __call__(self, search: LevelSearch, children: list[int],
                 values: dict[int, float]) -> tuple[list[int], dict[int, int]]:
        tree = search.strategy.tree
        if self.filter_duplicates:
            children = _unique(tree, ranked(children, values))
        if self.rank_terminals:
            kept = ranked(children, values)[: self.width]
            collected = [c for c in kept if tree[c].is_terminal]
            live = [c for c in kept if not tree[c].is_terminal]
        else:
            collected = [c for c in children if tree[c].is_terminal]
            live = ranked([c for c in children if not tree[c].is_terminal], values)[: self.width]
        return collected, spread(self.samples_per_level, live)


def _unique(tree, children: list[int]) -> list[int]:
    seen: set[tuple[int, str]] = set()  # (parent_id, step text) already kept
    out = []
    for c in children:
        key = (tree[c].parent_id, tree[c].text.strip())
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@register
class BeamSearch(LevelStrategy):
    """PRM-guided step-level beam search; see the module docstring."""

    name = "beam"
    Params = BeamParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p: BeamParams = self.params
        samples = p.beam_width * p.expansion_factor
        self.search = LevelSearch(
            self, start_id=0, first_width=p.root_samples or samples,
            select=KeepTop(p.beam_width, samples, filter_duplicates=p.filter_duplicates),
            agg=p.agg, seed=self.seed_for(), num_terminals=p.num_terminals or p.beam_width,
            lookahead=p.lookahead, lookahead_temperature=p.lookahead_temperature,
            pace=p.pace, level_samples=samples)

    def answer(self) -> Answer:
        p: BeamParams = self.params
        return answer_from(self, self.search.terminals, p.selection, p.agg,
                           num_levels=len(self.search.levels), num_paced=self.search.num_paced)
