"""Search: trees, strategies, FLOP budgets and the scheduler. Pure Python, no Ray, no torch.

Importing ``ponder.search`` imports ``ponder.search.strategies``, which registers
every built-in strategy, so ``get_strategy(name)`` finds any of them.
"""

from __future__ import annotations

from ponder.search.aggregate import aggregate_scores, best_scored, majority_vote, weighted_vote
from ponder.search.budget import BudgetError, BudgetManager, Reservation
from ponder.search.flops import (ModelSpec, StepCosts, actual_flops, default_token_bound, flops,
                                 worst_case_flops)
from ponder.search.messages import (GenerateRequest, GenerateResult, Request, Result, ScoreRequest,
                                    ScoreResult)
from ponder.search.scheduler import Plan, ProblemStats, Scheduler
from ponder.search.strategies import (Answer, JobContext, Strategy, StrategyParams, get_strategy,
                                      iter_strategies, register)
from ponder.search.task import SearchTask
from ponder.search.tree import Node, NodeStatus, Tree

__all__ = [
    "Answer", "BudgetError", "BudgetManager", "GenerateRequest", "GenerateResult", "JobContext",
    "ModelSpec", "Node", "NodeStatus", "Plan", "ProblemStats", "Request", "Reservation", "Result",
    "Scheduler", "ScoreRequest", "ScoreResult", "SearchTask", "StepCosts", "Strategy", "StrategyParams", "Tree",
    "actual_flops", "aggregate_scores", "best_scored", "default_token_bound", "flops",
    "get_strategy", "iter_strategies", "majority_vote", "register", "weighted_vote",
    "worst_case_flops",
]
