"""Best-of-N: sample N whole solutions, score each once, pick one (Brown et al. 2024).

One generate request asks for ``n`` complete solutions from the root (no stop
string, ``max_solution_tokens`` each). Each solution is split at the step
delimiter into a chain of nodes, so its trace looks like any tree path; all
chains are scored in one verifier request, and the answer is chosen by
``selection``: ``majority`` (self-consistency), ``weighted`` (PRM-weighted vote)
or ``best`` (the single best-scored solution), paths ranked by ``agg``.

A majority vote needs no scores, so by default it sends no score request and
runs with ``verifier: null``; ``score_solutions: true`` scores them anyway (for
traces that carry scores, or a caller that ranks paths afterwards).

It makes exactly ``n`` generations, or fewer if the scheduler shrank the
request to fit a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import check_aggregation
from ponder.search.messages import GenerateRequest, Request, Result
from ponder.search.strategies.base import Answer, StrategyParams, Strategy, register
from ponder.search.strategies.common import (SELECTIONS, add_solution, answer_from, apply_scores,
                                             check_at_least, check_choice, score_request)


@dataclass
class BestOfNParams(StrategyParams):
    n: int = 16  # whole solutions to sample
    max_solution_tokens: int = 512  # generation limit for one whole solution
    selection: str = "weighted"  # weighted | majority | best
    agg: str = "last"  # step-score aggregation ranking solutions: min | prod | last | mean
    score_solutions: bool | None = None  # ask the verifier to score them; None: unless selection
    # is majority, the one rule that needs no scores

    def validate(self) -> None:
        StrategyParams.validate(self)
        check_at_least("n", self.n, 1)
        check_at_least("max_solution_tokens", self.max_solution_tokens, 1)
        check_choice("selection", self.selection, SELECTIONS)
        check_aggregation(self.agg)
        if self.score_solutions not in (None, True, False):
            raise ValueError(f"search.score_solutions must be true, false or null, "
                             f"got {self.score_solutions!r}")
        if self.score_solutions is False and self.selection != "majority":
            raise ValueError(f"search.selection {self.selection!r} ranks solutions by their "
                             f"scores; it needs score_solutions true or null")


@register
class BestOfN(Strategy):
    """Sample N solutions, score them, vote; see the module docstring."""

    name = "best_of_n"
    Params = BestOfNParams

    @classmethod
    def needs_verifier(cls, params: BestOfNParams) -> bool:
        """True unless the vote is a plain majority and nobody asked for scores."""
        if params.score_solutions is not None:
            return params.score_solutions
        return params.selection != "majority"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.leaves: list[int] = []  # last node of each sampled solution, in sample order
        self._generating: int | None = None  # request_id of the one generate request
        self._scoring: int | None = None  # request_id of the one score request
        self._outbox: list[Request] = [self._sample()]

    def _sample(self) -> GenerateRequest:
        p: BestOfNParams = self.params
        request = GenerateRequest(
            request_id=self.next_request_id(), prefix=self.tree.prefix(0), n=p.n,
            max_new_tokens=p.max_solution_tokens, stop=(), temperature=p.temperature,
            top_p=p.top_p, seed=self.seed_for(), prefix_id=self.tree.prefix_id(0))
        self._generating = request.request_id
        return request

    def requests(self) -> list[Request]:
        out, self._outbox = ([] if self.done else self._outbox), []
        return out

    def owns(self, request_id: int) -> bool:
        """Whether ``request_id`` is one of this strategy's unanswered requests."""
        return request_id in (self._generating, self._scoring)

    def on_result(self, request: Request, result: Result) -> None:
        if self.done:
            return
        if request.request_id == self._generating:
            self._generating = None
            for i, text in enumerate(result.texts):
                logprob = result.cumulative_logprobs[i] if i < len(result.cumulative_logprobs) else 0.0
                leaf = add_solution(self.tree, self.task, 0, text, logprob)
                if leaf is not None:
                    self.leaves.append(leaf)
            if not self.leaves or not self.needs_verifier(self.params):
                self.stop("done")
                return
            score = score_request(self, self.leaves)
            self._scoring = score.request_id
            self._outbox.append(score)
        elif request.request_id == self._scoring:
            self._scoring = None
            apply_scores(self.tree, self.leaves, result)
            for leaf in self.leaves:  # every step of a chain gets its prefix's scores
                for node in self.tree.path(leaf)[:-1]:
                    node.scores = self.tree[leaf].scores[: node.depth]
            self.stop("done")
        else:
            raise KeyError(f"request {request.request_id} is not one of {self.name}'s requests")

    def answer(self) -> Answer:
        p: BestOfNParams = self.params
        finished = [leaf for leaf in self.leaves if self.tree[leaf].is_terminal]
        return answer_from(self, finished, p.selection, p.agg, num_samples=len(self.leaves))
