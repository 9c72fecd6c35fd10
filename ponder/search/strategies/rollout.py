"""Lookahead rollouts: a few greedy-ish steps past a node, to judge it by where it leads.

Used by beam search and DVTS (``lookahead``) and by MCTS (``rollout_depth``). The
rollout steps stay off the tree: they only feed the verifier, which scores the
node's path with the rollout appended; the last step's score becomes the node's
value. Each rollout has one request in flight at a time and its own seed stream,
so the outcome does not depend on the order in which results arrive.
"""

from __future__ import annotations

import random
from typing import Sequence

from ponder.search.messages import GenerateRequest, GenerateResult
from ponder.search.strategies.base import Strategy


class Rollouts:
    """Roll each non-terminal node of ``node_ids`` up to ``depth`` steps ahead, all at once.

    Args:
        strategy: the owner (tree, task, params, request ids).
        node_ids: nodes to roll out from; terminal ones get an empty rollout.
        depth: steps per rollout (a rollout also ends at a terminal step or max depth).
        temperature: sampling temperature of rollout steps (0 = greedy).
        seed: seeds every rollout's request stream.
    """

    def __init__(self, strategy: Strategy, node_ids: Sequence[int], depth: int,
                 temperature: float, seed: int):
        self.strategy = strategy
        self.depth = depth
        self.temperature = temperature
        tree = strategy.tree
        self.tails: dict[int, list[str]] = {  # node_id -> rollout steps so far
            n: [] for n in node_ids if not tree[n].is_terminal}
        rng = random.Random(seed)
        self._seeds = {n: rng.getrandbits(31) for n in self.tails}  # node_id -> seed of step 0
        self._in_flight: dict[int, int] = {}  # request_id -> node_id
        self._outbox: list[GenerateRequest] = []
        if depth > 0:
            for node_id in self.tails:
                self._send(node_id)

    @property
    def done(self) -> bool:
        return not self._in_flight

    def owns(self, request_id: int) -> bool:
        return request_id in self._in_flight

    def requests(self) -> list[GenerateRequest]:
        """Rollout steps to dispatch now."""
        out, self._outbox = self._outbox, []
        return out

    def on_result(self, request: GenerateRequest, result: GenerateResult) -> None:
        """Append the sampled step; queue the next one unless the rollout ended."""
        node_id = self._in_flight.pop(request.request_id)
        if not result.texts:
            return  # the budget cut this rollout short: judge the node by what it has
        tail = self.tails[node_id]
        tail.append(result.texts[0])
        task = self.strategy.task
        depth = self.strategy.tree[node_id].depth + len(tail)
        ended = result.finish_reasons[:1] == ["eos"]  # the model ended its answer
        if len(tail) < self.depth and depth < task.max_steps and not task.is_terminal(tail[-1]) and not ended:
            self._send(node_id)

    def _send(self, node_id: int) -> None:
        strategy = self.strategy
        tree, tail = strategy.tree, self.tails[node_id]
        delimiter = strategy.task.step_delimiter
        request = GenerateRequest(
            request_id=strategy.next_request_id(),
            prefix=tree.prefix(node_id) + "".join(step + delimiter for step in tail),
            n=1, max_new_tokens=strategy.params.max_step_tokens, stop=(delimiter,),
            temperature=self.temperature, top_p=strategy.params.top_p,
            seed=(self._seeds[node_id] + len(tail)) % 2**31, prefix_id=tree.prefix_id(node_id),
            prompt_end=len(tree.prompt))
        self._in_flight[request.request_id] = node_id
        self._outbox.append(request)
