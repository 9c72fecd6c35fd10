"""Compute-optimal search (Snell et al. 2024): probe each problem cheaply, then spend where it pays.

Phase 1 (probe): an inner ``best_of_n`` samples ``num_probe_samples`` whole
solutions and scores them. Their agreement and verifier scores give a
``DifficultyEstimate``, reported to the job's ``Allocator`` (created by the
first compute-optimal strategy in ``context.shared["compute_optimal"]`` over
``context.budget``, unless the engine put one there).

The allocator bins the problem (easy / medium / hard / hopeless), moves the
job's remaining FLOPs toward medium, then hard, problems by setting problem
caps, and picks the phase-2 search; the full policy, including the fixed rule
used without a budget, is in ``ponder.search.allocate``. While the other
problems of its group are still probing, this strategy asks for nothing.

Phase 2 runs an inner strategy of the chosen kind (``best_of_n`` with a
majority vote, ``beam`` or ``dvts``) over the same tree, sized to the grant; a
hopeless problem stops with its best probe answer. The final answer is chosen
over every finished path of both phases: by majority for easy problems, by
``selection`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ponder.search.aggregate import aggregate_scores, check_aggregation
from ponder.search.allocate import STOP, AllocationPolicy, Allocator, Decision, estimate_difficulty
from ponder.search.messages import Request, Result
from ponder.search.strategies.base import Answer, StrategyParams, Strategy, get_strategy, register
from ponder.search.strategies.best_of_n import BestOfN, BestOfNParams
from ponder.search.strategies.common import SELECTIONS, answer_from, check_at_least, check_choice

SHARED_KEY = "compute_optimal"  # JobContext.shared key of the job's Allocator


@dataclass
class ComputeOptimalParams(StrategyParams):
    num_probe_samples: int = 8  # phase 1: whole solutions sampled to gauge difficulty
    max_solution_tokens: int = 512  # generation limit of one whole solution (probe, best_of_n)
    agg: str = "last"  # step-score aggregation: min | prod | last | mean
    selection: str = "weighted"  # final answer of non-easy problems: weighted | majority | best
    expansion_factor: int = 4  # phase-2 beam: samples per beam per level
    dvts_beam_width: int = 4  # phase-2 DVTS: samples per subtree per level
    lookahead: int = 0  # phase-2 beam and DVTS rollout steps
    easy_agreement: float = 0.7  # easy: majority share at least this...
    easy_score: float = 0.7  # ...with a verifier score at least this
    medium_score: float = 0.5  # medium: some answer scores at least this
    hopeless_score: float = 0.2  # hopeless: no answer scores this much
    fixed_num_samples: int = 16  # phase-2 samples of a medium problem when no budget caps the job
    max_num_samples: int = 256  # phase-2 samples at most

    def validate(self) -> None:
        StrategyParams.validate(self)
        for name in ("num_probe_samples", "max_solution_tokens", "expansion_factor", "dvts_beam_width"):
            check_at_least(name, getattr(self, name), 1)
        check_at_least("lookahead", self.lookahead, 0)
        check_aggregation(self.agg)
        check_choice("selection", self.selection, SELECTIONS)
        self.policy().validate()

    def policy(self) -> AllocationPolicy:
        """The allocation policy these parameters describe."""
        return AllocationPolicy(
            easy_agreement=self.easy_agreement, easy_score=self.easy_score,
            medium_score=self.medium_score, hopeless_score=self.hopeless_score,
            fixed_num_samples=self.fixed_num_samples, max_num_samples=self.max_num_samples)


@register
class ComputeOptimal(Strategy):
    """Probe, report difficulty, then run the search the allocator picks; see the module docstring."""

    name = "compute_optimal"
    Params = ComputeOptimalParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p: ComputeOptimalParams = self.params
        shared = self.context.shared
        if SHARED_KEY not in shared:  # the first compute-optimal problem of the job sets it up
            shared[SHARED_KEY] = Allocator(self.context.budget, p.policy())
        self.allocator: Allocator = shared[SHARED_KEY]
        self.allocator.register(self.problem_id)
        probe_params = BestOfNParams(
            n=p.num_probe_samples, max_solution_tokens=p.max_solution_tokens, selection=p.selection,
            agg=p.agg, temperature=p.temperature, top_p=p.top_p, max_step_tokens=p.max_step_tokens,
            score_solutions=True)  # the difficulty estimate reads the probe's scores
        self.probe = BestOfN(self.tree, self.task, probe_params, self.seed_for(),
                             self.next_request_id, self.context)
        self.decision: Decision | None = None
        self.inner: Strategy | None = None  # the phase-2 search

    def requests(self) -> list[Request]:
        if self.done:
            return []
        if not self.probe.done:
            return self.probe.requests()
        if self.inner is None:
            self.decision = self.allocator.decision(self.problem_id)
            if self.decision is None:
                return []  # the rest of the group is still probing
            self._start_phase2(self.decision)
            if self.inner is None:
                return []
        return self.inner.requests()

    def on_result(self, request: Request, result: Result) -> None:
        if self.done:
            return
        if self.inner is None:
            self.probe.on_result(request, result)
            if self.probe.done:
                self._report()
        else:
            self.inner.on_result(request, result)
            if self.inner.done:
                self.stop("done")

    def stop(self, reason: str) -> None:
        """Stop both phases and tell the allocator this problem will spend no more."""
        if self.stop_reason is not None:
            return
        super().stop(reason)
        for strategy in (self.probe, self.inner):
            if strategy is not None:
                strategy.stop(reason)
        self.allocator.leave(self.problem_id)

    def _report(self) -> None:
        p: ComputeOptimalParams = self.params
        finished = [self.tree[n] for n in self.probe.leaves if self.tree[n].is_terminal]
        budget = self.context.budget
        known = budget is not None and self.problem_id in budget
        spent = budget.spent(self.problem_id) if known else 0
        worst = budget.reserved_ever(self.problem_id) if known else 0
        self.allocator.report(estimate_difficulty(
            self.problem_id, [n.answer for n in finished],
            [aggregate_scores(n.scores, p.agg) for n in finished],
            num_samples=len(self.probe.leaves), spent=spent, worst_case=worst))

    def _start_phase2(self, decision: Decision) -> None:
        if decision.strategy == STOP:
            self.stop("done")
            return
        cls = get_strategy(decision.strategy)
        params = cls.Params.from_dict(self._phase2_params(decision.strategy, decision.num_samples))
        self.inner = cls(self.tree, self.task, params, self.seed_for(), self.next_request_id,
                         self.context)

    def _phase2_params(self, name: str, num_samples: int) -> dict[str, Any]:
        p: ComputeOptimalParams = self.params
        common = {"temperature": p.temperature, "top_p": p.top_p,
                  "max_step_tokens": p.max_step_tokens, "agg": p.agg}
        if name == "best_of_n":
            return {**common, "n": num_samples, "max_solution_tokens": p.max_solution_tokens,
                    "selection": "majority", "score_solutions": True}  # the final vote may weigh them
        if name == "beam":
            return {**common, "beam_width": max(1, num_samples // p.expansion_factor),
                    "expansion_factor": p.expansion_factor, "lookahead": p.lookahead,
                    "selection": p.selection}
        if name == "dvts":
            return {**common, "num_samples": max(num_samples, p.dvts_beam_width),
                    "beam_width": p.dvts_beam_width, "lookahead": p.lookahead,
                    "selection": p.selection}
        raise ValueError(f"compute_optimal cannot size phase-2 strategy {name!r}; "
                         f"valid: best_of_n, beam, dvts")

    def answer(self) -> Answer:
        p: ComputeOptimalParams = self.params
        decision = self.decision or self.allocator.decision(self.problem_id)
        difficulty = decision.bin if decision is not None else None
        selection = "majority" if difficulty == "easy" else p.selection
        terminals = [n.node_id for n in self.tree.terminals()]
        return answer_from(self, terminals, selection, p.agg, bin=difficulty,
                           phase2=decision.strategy if decision is not None else None,
                           num_samples=decision.num_samples if decision is not None else 0,
                           grant=decision.grant if decision is not None else None)
