"""Monte Carlo tree search with PUCT over reasoning steps (AlphaZero-style).

A simulation walks from the root picking the child with the largest
``Q + c_puct * P * sqrt(N_parent) / (1 + N_child)`` until it reaches a node it
may widen, a leaf, or a finished path. ``P`` is a softmax of the siblings'
generation logprobs (or uniform); ``Q`` the mean value below the child.

Expansion uses progressive widening: a node with ``N`` visits may draw at most
``ceil(widen_k * max(N, 1) ** widen_alpha)`` samples, so it has at most that
many children, and a walk that reaches a node with room for more expands it
(one request for the missing samples) instead of descending. A sample equal to
an existing sibling merges into it: the same step is the same state. Each new
child is scored by the verifier, optionally after a greedy rollout of
``rollout_depth`` steps (then the rollout's last step score is its value), and
starts with that evaluation as its one visit. The expanded node and its
ancestors get one visit each, valued at the best Q among the children the
expansion sampled: the step the search would follow next. So ``N`` counts
walks, not nodes, and widening stays proportionate. A walk that ends on a
finished path backs up that path's value again.

Simulations run in waves of up to ``num_parallel`` so the scheduler can batch
them: each walk adds a virtual visit (of value 0) to its path, steering the next
walks of the wave elsewhere, and a walk that still runs into a node being
expanded ends the wave (going on would only re-count what is in flight). A
wave's results are applied in request order once all are in, which keeps the
search deterministic whatever the arrival order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.search.aggregate import aggregate_scores, check_aggregation
from ponder.search.messages import GenerateResult, Request, Result
from ponder.search.strategies.base import Answer, StrategyParams, Strategy, register
from ponder.search.strategies.common import (SELECTIONS, add_children, answer_from, apply_scores,
                                             check_at_least, check_choice, make_answer, path_value,
                                             step_request)
from ponder.search.strategies.rollout import Rollouts
from ponder.search.strategies.rounds import ExpandScoreRounds
from ponder.search.tree import Node, NodeStatus

PRIORS: tuple[str, ...] = ("logprob", "uniform")


@dataclass
class MCTSParams(StrategyParams):
    num_simulations: int = 32  # walks from the root (expansions plus re-visits of finished paths)
    c_puct: float = 1.5  # weight of the prior-driven exploration term
    widen_k: float = 2.0  # progressive widening: at most ceil(widen_k * N ** widen_alpha) children
    widen_alpha: float = 0.5
    num_parallel: int = 4  # simulations in flight at once, kept apart by virtual loss
    prior: str = "logprob"  # children's priors: logprob (softmax over siblings) | uniform
    rollout_depth: int = 0  # greedy steps rolled out before valuing a new child (0 = its own score)
    rollout_temperature: float = 0.0  # sampling temperature of rollout steps
    agg: str = "last"  # step-score aggregation giving a child its value: min | prod | last | mean
    selection: str = "visits"  # final answer: visits (most-visited path) | weighted | majority | best

    def validate(self) -> None:
        StrategyParams.validate(self)
        check_at_least("num_simulations", self.num_simulations, 1)
        check_at_least("c_puct", self.c_puct, 0.0)
        if not self.widen_k > 0:
            raise ValueError(f"search.widen_k must be > 0, got {self.widen_k!r}")
        check_at_least("widen_alpha", self.widen_alpha, 0.0)
        check_at_least("num_parallel", self.num_parallel, 1)
        check_choice("prior", self.prior, PRIORS)
        check_at_least("rollout_depth", self.rollout_depth, 0)
        check_at_least("rollout_temperature", self.rollout_temperature, 0.0)
        check_aggregation(self.agg)
        check_choice("selection", self.selection, ("visits",) + SELECTIONS)


@register
class MCTS(ExpandScoreRounds, Strategy):
    """PUCT tree search with progressive widening; see the module docstring."""

    name = "mcts"
    Params = MCTSParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_started = 0  # simulations begun
        self.leaf_values: dict[int, float] = {}  # node_id -> its evaluation when it was created
        self.num_drawn: dict[int, int] = {}  # node_id -> samples drawn from it (widening counts these)
        self._virtual: dict[int, int] = {}  # node_id -> virtual visits of walks in flight
        self._expanding: dict[int, int] = {}  # request_id -> node being expanded, this wave
        self._results: dict[int, GenerateResult] = {}  # request_id -> result, until the wave is in
        self._sampled: dict[int, list[int]] = {}  # expanded node_id -> children sampled this wave
        self._new: list[int] = []  # this wave's new children, to be scored
        self._rollouts: Rollouts | None = None
        self._scoring: int | None = None  # request_id of this wave's score request
        self._outbox: list[Request] = []
        self._start_wave()

    # -- the wave -----------------------------------------------------------------

    def requests(self) -> list[Request]:
        out, self._outbox = ([] if self.done else self._outbox), []
        return out

    def on_result(self, request: Request, result: Result) -> None:
        if not self.done:
            self._route(request, result)

    def _start_wave(self) -> None:
        p: MCTSParams = self.params
        while self.num_started < p.num_simulations and len(self._expanding) < p.num_parallel:
            path = self._walk()
            if path is None:
                break  # the best way down leads into an expansion already in flight
            self.num_started += 1
            leaf = self.tree[path[-1]]
            if leaf.is_terminal:
                self.tree.backpropagate(leaf.node_id, self._value(leaf))
            else:
                self._expand(path)
        if not self._expanding:
            self.stop("done")

    def _walk(self) -> list[int] | None:
        """Node ids from the root to where this simulation stops; None if blocked."""
        busy = set(self._expanding.values())
        node = self.tree.root
        path = [0]
        while not node.is_terminal:
            if node.node_id in busy:
                return None  # walking on through would re-count what is already in flight
            if self.num_drawn.get(node.node_id, 0) < self._max_children(node) or not node.children:
                break
            node = max((self.tree[c] for c in node.children), key=lambda c: self._puct(node, c))
            path.append(node.node_id)
        return path

    def _expand(self, path: list[int]) -> None:
        leaf = self.tree[path[-1]]
        n = self._max_children(leaf) - self.num_drawn.get(leaf.node_id, 0)
        request = step_request(self, leaf.node_id, n, self.seed_for())
        leaf.status = NodeStatus.EXPANDING
        self._expanding[request.request_id] = leaf.node_id
        self._outbox.append(request)
        for node_id in path:
            self._virtual[node_id] = self._virtual.get(node_id, 0) + 1

    def _grow(self) -> None:
        for request_id, node_id in self._expanding.items():  # send order, not arrival order
            num_nodes = len(self.tree)
            ids = add_children(self.tree, self.task, node_id, self._results[request_id],
                               merge_duplicates=True)
            self.num_drawn[node_id] = self.num_drawn.get(node_id, 0) + len(ids)
            self._sampled[node_id] = list(dict.fromkeys(ids))
            self._new += [c for c in self._sampled[node_id] if c >= num_nodes]
        p: MCTSParams = self.params
        if not self._new:
            self._scored(None)  # only merged duplicates (or nothing): no new value to learn
        else:
            self._roll_out_or_score(self, self._new, p.rollout_depth, p.rollout_temperature,
                                    self.seed_for)

    def _score(self) -> None:
        self._send_score(self, self._new)

    def _scored(self, result: Result | None) -> None:
        """Back the wave's new values up (``result``: their scores; None: nothing new)."""
        full = apply_scores(self.tree, self._new, result) if result is not None else {}
        for child_id in self._new:
            child = self.tree[child_id]
            value = path_value(self.tree, child_id, self.params.agg, full.get(child_id))
            self.leaf_values[child_id] = value
            child.visits, child.value_sum = 1, value  # its own evaluation counts as one visit
        for node_id, sampled in self._sampled.items():
            if sampled:
                self.tree.backpropagate(node_id, max(self.tree[c].value for c in sampled))
        self._end_wave()

    def _end_wave(self) -> None:
        self._virtual.clear()
        self._expanding.clear()
        self._results.clear()
        self._sampled.clear()
        self._new = []
        self._rollouts = None
        self._scoring = None
        self._start_wave()

    # -- the formulas ---------------------------------------------------------------

    def _max_children(self, node: Node) -> int:
        p: MCTSParams = self.params
        return math.ceil(p.widen_k * max(node.visits, 1) ** p.widen_alpha)

    def _puct(self, parent: Node, child: Node) -> tuple[float, int]:
        p: MCTSParams = self.params
        n_parent = parent.visits + self._virtual.get(parent.node_id, 0)
        n_child = child.visits + self._virtual.get(child.node_id, 0)
        q = child.value_sum / n_child if n_child else 0.0  # virtual visits count as value 0
        prior = child.prior if p.prior == "logprob" else 1.0 / len(parent.children)
        u = p.c_puct * prior * math.sqrt(n_parent) / (1 + n_child)
        return q + u, -child.node_id  # ties go to the older child

    def _value(self, node: Node) -> float:
        value = self.leaf_values.get(node.node_id)
        return aggregate_scores(node.scores, self.params.agg) if value is None else value

    # -- the answer -----------------------------------------------------------------

    def answer(self) -> Answer:
        p: MCTSParams = self.params
        terminals = [n.node_id for n in self.tree.terminals()]
        if p.selection != "visits":
            return answer_from(self, terminals, p.selection, p.agg, num_simulations=self.num_started)
        node = self.tree.root
        while node.children:
            node = max((self.tree[c] for c in node.children),
                       key=lambda c: (c.visits, c.value, -c.node_id))
        if node.is_terminal and node.answer is not None:
            return make_answer(self, node.node_id, aggregate_scores(node.scores, p.agg),
                               num_simulations=self.num_started)
        return answer_from(self, terminals, "weighted", p.agg, num_simulations=self.num_started)
