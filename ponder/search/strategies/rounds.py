"""One round of expand-then-score: the step a LevelSearch level and an MCTS wave share.

A round sends one generate request per node it expands. Once every expansion is
in, the owner adds the children (in send order, so the tree does not depend on
the order results arrive in), optionally rolls the new ones out a few steps, and
scores them in one request.
"""

from __future__ import annotations

from typing import Callable

from ponder.search.messages import GenerateResult, Request, Result
from ponder.search.strategies.base import Strategy
from ponder.search.strategies.common import score_request
from ponder.search.strategies.rollout import Rollouts


class ExpandScoreRounds:
    """Routes a round's results; subclasses hold the state below and implement the hooks.

    Hooks: ``_grow()`` once every expansion of the round is in (``_results``, keyed
    like ``_expanding``), ``_score()`` to send the score request (through
    ``_send_score``), ``_scored(result)`` when it comes back.
    """

    _expanding: dict[int, int]  # request_id -> node_id, this round's expansions
    _results: dict[int, GenerateResult]  # request_id -> result, until the round's expansions are in
    _rollouts: Rollouts | None
    _scoring: int | None  # request_id of this round's score request
    _outbox: list[Request]

    def _grow(self) -> None:
        raise NotImplementedError

    def _score(self) -> None:
        raise NotImplementedError

    def _scored(self, result: Result) -> None:
        raise NotImplementedError

    def _route(self, request: Request, result: Result) -> None:
        """Take one result of this round's requests; raises KeyError for any other."""
        request_id = request.request_id
        if request_id in self._expanding:
            self._results[request_id] = result
            if len(self._results) == len(self._expanding):
                self._grow()
        elif self._rollouts is not None and self._rollouts.owns(request_id):
            self._rollouts.on_result(request, result)
            self._outbox.extend(self._rollouts.requests())
            if self._rollouts.done:
                self._score()
        elif request_id == self._scoring:
            self._scored(result)
        else:
            raise KeyError(f"request {request_id} is not one of this search's requests")

    def _roll_out_or_score(self, owner: Strategy, children: list[int], depth: int,
                           temperature: float, next_seed: Callable[[], int]) -> None:
        """Roll ``children`` out ``depth`` steps first (``next_seed`` is drawn only then), then score."""
        if depth > 0:
            self._rollouts = Rollouts(owner, children, depth, temperature, next_seed())
            self._outbox.extend(self._rollouts.requests())
            if not self._rollouts.done:
                return
        self._score()

    def _send_score(self, owner: Strategy, children: list[int]) -> None:
        """Queue the one request scoring ``children`` (with their rollout tails, if any)."""
        tails = self._rollouts.tails if self._rollouts is not None else None
        request = score_request(owner, children, tails)
        self._scoring = request.request_id
        self._outbox.append(request)
