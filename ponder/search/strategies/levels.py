"""Level-synchronous tree growth: the loop beam search, DVTS and REBASE share.

One level is: expand every frontier node (one request each, ``n`` = its width),
optionally roll the new children out a few steps, score them in one request,
then let a *selection policy* say which finished paths to collect and how many
samples each surviving child gets at the next level. The policies differ
(top-k for beam and DVTS, a softmax over scores for REBASE); the loop does not.

A level's results are applied in request order once all have arrived, so the
tree does not depend on the order the scheduler delivers them in.

Pacing (``pace=True``, beam search's default): under a FLOP cap, each level is
sized before it is asked for, from what the cap has left, so that a search too
big for its cap narrows instead of stopping mid-way with nothing finished. A
level takes the most of its samples (the best-ranked nodes keep theirs) such that

- the level's worst cases, priced by the job's ``StepCosts`` (``JobContext``) as
  the scheduler will reserve them, fit what is left now: its expansions all at once, then its
  scoring beside what the expansions will have cost (at the spent-over-reserved
  rate seen so far), so the level is placed whole and never cut short between
  its expansions and its scoring; and
- from the second level on, its samples and the next level's (``level_samples``,
  shrunk in the same proportion; none after ``task.max_steps``) fit what is left
  at what one sample of this search has really cost so far (prefix caches make
  most requests cost a fraction of their worst case). One level ahead, not all
  the way to ``max_steps``: most searches finish well before it, and planning
  for levels that never come would narrow every level for nothing.

Each level re-plans with what is left, so a cheap level hands the next more.
Without a cap, a ledger or step costs, widths are what the policy asked for.
"""

from __future__ import annotations

import random
from typing import Callable

from ponder.search.messages import GenerateRequest, GenerateResult, Request, Result
from ponder.search.strategies.base import Strategy
from ponder.search.strategies.common import add_children, apply_scores, path_value, step_request
from ponder.search.strategies.rollout import Rollouts
from ponder.search.strategies.rounds import ExpandScoreRounds
from ponder.search.tree import NodeStatus

# (search, new children, node_id -> value) -> (finished paths to collect, node_id -> next-level width).
# Policies are small callable objects (beam.KeepTop, rebase.Balance), not closures, so searches pickle.
SelectPolicy = Callable[["LevelSearch", list[int], dict[int, float]], tuple[list[int], dict[int, int]]]


class LevelSearch(ExpandScoreRounds):
    """Grow ``strategy.tree`` level by level from ``start_id``.

    Args:
        strategy: the owner: tree, task, params and request ids.
        start_id: the node the search grows from (the root, or a subtree's top).
        first_width: samples drawn from ``start_id`` at the first level.
        select: the policy that picks collected terminals and next-level widths.
        agg: step-score aggregation giving each child its value.
        seed: seeds this search's sampling requests (its own stream, so that
            searches sharing a strategy do not depend on each other's timing).
        num_terminals: stop once this many finished paths are collected (None: only
            when the frontier is empty).
        lookahead: rollout steps before scoring each level (0: no rollouts).
        lookahead_temperature: sampling temperature of rollout steps.
        pace: size each level to what the problem's cap has left (module docstring).
        level_samples: samples each later level asks for (for pacing; None: the first
            level's).
    """

    # Defaults for searches restored from checkpoints written before pacing existed.
    pace = False
    level_samples: int | None = None
    num_paced = 0
    _first: dict[int, int] | None = None
    _before: tuple[int, int] | None = None  # (spent, reserved ever) of the problem when pacing began
    _asked = 0  # samples the paced levels asked for so far

    def __init__(self, strategy: Strategy, start_id: int, first_width: int, select: SelectPolicy,
                 agg: str, seed: int, num_terminals: int | None = None, lookahead: int = 0,
                 lookahead_temperature: float = 0.0, pace: bool = False,
                 level_samples: int | None = None):
        self.strategy = strategy
        self.select = select
        self.agg = agg
        self.num_terminals = num_terminals
        self.lookahead = lookahead
        self.lookahead_temperature = lookahead_temperature
        self.pace = pace
        self.level_samples = first_width if level_samples is None else level_samples
        self.num_paced = 0  # levels pacing made narrower than their policy asked
        self._before = None
        self._asked = 0
        self.rng = random.Random(seed)
        self.terminals: list[int] = []  # collected finished paths (leaf node ids)
        self.node_ids: list[int] = []  # every node this search created, in creation order
        self.levels: list[dict[int, int]] = []  # per level: node_id -> samples asked for it
        self.values: dict[int, float] = {}  # node_id -> the value the policy ranked it by
        self.finished = False
        self._expanding: dict[int, int] = {}  # request_id -> node_id, this level's expansions
        self._results: dict[int, GenerateResult] = {}  # request_id -> result, until the level is in
        self._children: list[int] = []  # this level's new nodes
        self._rollouts: Rollouts | None = None
        self._scoring: int | None = None  # request_id of this level's score request
        self._outbox: list[Request] = []
        # A paced first level waits for the first requests() call: the scheduler has
        # registered the problem with the ledger by then, so its cap is known.
        self._first: dict[int, int] | None = {start_id: first_width} if pace else None
        if not pace:
            self._expand({start_id: first_width})

    def requests(self) -> list[Request]:
        """Requests to dispatch now."""
        if self._first is not None:
            first, self._first = self._first, None
            self._expand(first)
        out, self._outbox = self._outbox, []
        return out

    def owns(self, request_id: int) -> bool:
        """Whether ``request_id`` is one of this search's unanswered requests."""
        return (request_id in self._expanding or request_id == self._scoring
                or (self._rollouts is not None and self._rollouts.owns(request_id)))

    def on_result(self, request: Request, result: Result) -> None:
        """Take one result; advances the level once all of its results are in."""
        self._route(request, result)

    def _expand(self, widths: dict[int, int]) -> None:
        tree = self.strategy.tree
        if self.pace:
            widths = self._paced(widths)
        self.levels.append(dict(widths))
        for node_id, n in widths.items():
            request: GenerateRequest = step_request(self.strategy, node_id, n, self.rng.getrandbits(31))
            tree[node_id].status = NodeStatus.EXPANDING
            self._expanding[request.request_id] = node_id
            self._outbox.append(request)

    def _grow(self) -> None:
        tree, task = self.strategy.tree, self.strategy.task
        children: list[int] = []
        for request_id, node_id in self._expanding.items():  # send order, not arrival order
            children += add_children(tree, task, node_id, self._results[request_id])
        self._expanding.clear()
        self._results.clear()
        self.node_ids += children
        self._children = children
        if not children:  # the budget left nothing to grow
            self.finished = True
            return
        self._roll_out_or_score(self.strategy, children, self.lookahead, self.lookahead_temperature,
                                lambda: self.rng.getrandbits(31))

    def _score(self) -> None:
        self._send_score(self.strategy, self._children)

    def _scored(self, result: Result) -> None:
        tree = self.strategy.tree
        self._scoring = None
        self._rollouts = None
        full = apply_scores(tree, self._children, result)
        values = {c: path_value(tree, c, self.agg, full.get(c)) for c in self._children}
        self.values.update(values)
        collected, widths = self.select(self, self._children, values)
        self.terminals += collected
        for child in self._children:
            if child not in widths and not tree[child].is_terminal:
                tree[child].status = NodeStatus.PRUNED
        enough = self.num_terminals is not None and len(self.terminals) >= self.num_terminals
        if enough or not widths:
            self.finished = True
            return
        self._expand(widths)

    def _paced(self, widths: dict[int, int]) -> dict[int, int]:
        """``widths`` narrowed to what the cap has left (module docstring); unchanged if it fits."""
        strategy = self.strategy
        budget, costs = strategy.context.budget, strategy.context.step_costs
        problem_id = strategy.problem_id
        if costs is None or budget is None or problem_id not in budget:
            return widths
        spent, reserved = budget.spent(problem_id), budget.reserved_ever(problem_id)
        if self._before is None:  # this search's first level: what the problem had spent before it
            self._before = (spent, reserved)
        asked = sum(widths.values())
        left = budget.remaining(problem_id)
        if left is None or asked <= 1:
            self._asked += asked
            return widths
        tree, max_new = strategy.tree, strategy.params.max_step_tokens
        nodes = list(widths)  # best first: the policy ranked them
        prompts = {n: costs.token_bound(tree.prefix(n)) for n in nodes}  # token bounds
        depth = max(tree[n].depth for n in nodes)
        last = depth + 1 >= strategy.task.max_steps  # this level's children are the last
        spent, reserved = spent - self._before[0], reserved - self._before[1]
        per_sample = spent / self._asked if self._asked else None  # what a sample really cost so far
        rate = min(1.0, spent / reserved) if reserved else 1.0  # spent over reserved so far
        tails = self.lookahead * max_new  # scored paths carry their rollout tails

        def worst(total: int) -> tuple[int, int]:  # this level's (generation, scoring) worst cases
            generate = score = 0
            for node, n in spread(total, nodes).items():
                prompt = prompts[node]
                generate += sum(costs.generate(prompt + step * max_new, n, max_new)
                                for step in range(self.lookahead + 1))  # the step, its rollout
                score += costs.score(prompt + tails, n, max_new)
            return generate, score

        def fits(total: int) -> bool:
            generate, score = worst(total)
            # The expansions are reserved together (so the scheduler never cuts their n
            # short), the scoring once they settled (at ``rate``).
            if generate > left or score + rate * generate > left:
                return False
            if per_sample is None:  # the first level: no spending to go by yet
                return True
            later = 0 if last else max(1, self.level_samples * total // asked)
            return per_sample * (total + later) <= left

        chosen = asked
        if not fits(asked):
            lo, hi = 1, asked  # the most samples that fit: fits() is monotone in ``total``
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            chosen = lo
            self.num_paced += 1
        self._asked += chosen
        return widths if chosen == asked else spread(chosen, nodes)


class LevelStrategy(Strategy):
    """A strategy that is one LevelSearch grown from the root (beam search, REBASE).

    Subclasses set ``self.search`` in ``__init__`` and implement ``answer``.
    """

    search: LevelSearch

    def requests(self) -> list[Request]:
        return [] if self.done else self.search.requests()

    def on_result(self, request: Request, result: Result) -> None:
        if self.done:
            return
        self.search.on_result(request, result)
        if self.search.finished:
            self.stop("done")


def spread(total: int, node_ids: list[int]) -> dict[int, int]:
    """Split ``total`` samples evenly over ``node_ids``; the first ones get the remainder."""
    if not node_ids:
        return {}
    base, extra = divmod(total, len(node_ids))
    widths = {n: base + (i < extra) for i, n in enumerate(node_ids)}
    return {n: w for n, w in widths.items() if w > 0}


def ranked(node_ids: list[int], values: dict[int, float]) -> list[int]:
    """``node_ids`` best value first; ties go to the older node, so ranking is deterministic."""
    return sorted(node_ids, key=lambda n: (-values[n], n))
