"""Search strategies, found by name through the registry in ``base``.

Importing this package registers every built-in strategy:
``best_of_n``, ``beam``, ``dvts``, ``mcts``, ``rebase`` and ``compute_optimal``.
"""

from ponder.search.strategies import best_of_n, beam, dvts, mcts, rebase  # noqa: F401  (registers)
from ponder.search.strategies import compute_optimal  # noqa: F401  (uses the ones above)
from ponder.search.strategies.base import (STRATEGIES, Answer, JobContext, Strategy, StrategyParams,
                                           get_strategy, iter_strategies, register)

__all__ = ["STRATEGIES", "Answer", "JobContext", "Strategy", "StrategyParams", "get_strategy",
           "iter_strategies", "register"]
