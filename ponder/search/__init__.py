"""Search: trees, strategies, FLOP budgets and the scheduler. Pure Python, no Ray, no torch.

Strategy modules register themselves when imported; ``get_strategy`` and
``iter_strategies`` here import every module of ``ponder.search.strategies`` first,
so a name resolves without the caller importing its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterator

from ponder.search.aggregate import aggregate_scores, best_scored, majority_vote, weighted_vote
from ponder.search.budget import (BudgetError, BudgetManager, Reservation, actual_flops,
                                  default_token_bound, worst_case_flops)
from ponder.search.flops import ModelSpec, flops
from ponder.search.messages import (GenerateRequest, GenerateResult, Request, Result, ScoreRequest,
                                    ScoreResult)
from ponder.search.scheduler import Plan, ProblemStats, Scheduler
from ponder.search.strategies import base as _base
from ponder.search.strategies.base import Answer, JobContext, Strategy, StrategyParams, register
from ponder.search.task import SearchTask
from ponder.search.tree import Node, NodeStatus, Tree

__all__ = [
    "Answer", "BudgetError", "BudgetManager", "GenerateRequest", "GenerateResult", "JobContext",
    "ModelSpec", "Node", "NodeStatus", "Plan", "ProblemStats", "Request", "Reservation", "Result",
    "Scheduler", "ScoreRequest", "ScoreResult", "SearchTask", "Strategy", "StrategyParams", "Tree",
    "actual_flops", "aggregate_scores", "best_scored", "default_token_bound", "flops",
    "get_strategy", "iter_strategies", "load_strategies", "majority_vote", "register",
    "weighted_vote", "worst_case_flops",
]


def load_strategies() -> None:
    """Import every module in ``ponder.search.strategies`` so that each registers its strategy."""
    package = importlib.import_module("ponder.search.strategies")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``.

    Raises:
        ValueError: if no strategy has that name; the message lists the valid ones.
    """
    load_strategies()
    return _base.get_strategy(name)


def iter_strategies() -> Iterator[str]:
    """Names of all strategies, sorted."""
    load_strategies()
    return _base.iter_strategies()
