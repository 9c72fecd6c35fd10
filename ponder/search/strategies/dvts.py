"""Diverse verifier tree search (Beeching et al. 2024, search-and-learn).

Beam search with a wide beam tends to collapse onto one high-scoring prefix.
DVTS splits the sample budget ``num_samples`` into ``num_samples // beam_width``
independent subtrees; each is a beam search of width 1 that draws
``beam_width`` one-step samples per level and keeps its single best child (a
finished best child ends that subtree). Subtrees share only the root, run in
parallel, and the final answer is a vote (or the best score) over the finished
paths of all subtrees.

Each subtree is a ``levels.LevelSearch`` with beam search's own top-k policy,
so DVTS has no search loop of its own: it only routes results to subtrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import check_aggregation
from ponder.search.messages import Request, Result
from ponder.search.strategies.base import Answer, StrategyParams, Strategy, register
from ponder.search.strategies.beam import KeepTop
from ponder.search.strategies.common import SELECTIONS, answer_from, check_at_least, check_choice
from ponder.search.strategies.levels import LevelSearch


@dataclass
class DVTSParams(StrategyParams):
    num_samples: int = 16  # N: samples per level over all subtrees
    beam_width: int = 4  # samples per subtree per level; N // beam_width subtrees
    lookahead: int = 0  # greedy rollout steps used to judge each child (0 = judge the child itself)
    lookahead_temperature: float = 0.0  # sampling temperature of rollout steps
    agg: str = "last"  # step-score aggregation ranking paths: min | prod | last | mean
    selection: str = "weighted"  # final answer: weighted | majority | best over finished paths

    def validate(self) -> None:
        StrategyParams.validate(self)
        check_at_least("beam_width", self.beam_width, 1)
        check_at_least("num_samples", self.num_samples, self.beam_width)
        check_at_least("lookahead", self.lookahead, 0)
        check_at_least("lookahead_temperature", self.lookahead_temperature, 0.0)
        check_aggregation(self.agg)
        check_choice("selection", self.selection, SELECTIONS)


@register
class DVTS(Strategy):
    """Independent width-1 beam searches from the root; see the module docstring."""

    name = "dvts"
    Params = DVTSParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p: DVTSParams = self.params
        policy = KeepTop(1, p.beam_width, rank_terminals=True)
        self.subtrees = [
            LevelSearch(self, start_id=0, first_width=p.beam_width, select=policy, agg=p.agg,
                        seed=self.seed_for(), num_terminals=1, lookahead=p.lookahead,
                        lookahead_temperature=p.lookahead_temperature)
            for _ in range(p.num_samples // p.beam_width)]
        self._owner: dict[int, LevelSearch] = {}  # request_id -> subtree that sent it

    def requests(self) -> list[Request]:
        if self.done:
            return []
        out = []
        for subtree in self.subtrees:
            for request in subtree.requests():
                self._owner[request.request_id] = subtree
                out.append(request)
        return out

    def on_result(self, request: Request, result: Result) -> None:
        if self.done:
            return
        subtree = self._owner.pop(request.request_id)
        subtree.on_result(request, result)
        if all(s.finished for s in self.subtrees):
            self.stop("done")

    def terminals(self) -> list[int]:
        """Finished paths of all subtrees, subtree by subtree."""
        return [n for s in self.subtrees for n in s.terminals]

    def answer(self) -> Answer:
        p: DVTSParams = self.params
        return answer_from(self, self.terminals(), p.selection, p.agg,
                           num_subtrees=len(self.subtrees))
