"""ponder: a distributed engine for test-time compute.

    import ponder
    summary = ponder.solve("configs/game24.yaml", range_="900:910", out_dir="runs/demo")
    config = ponder.load_config("configs/game24.yaml", ["search.strategy=mcts"])
    with ponder.Engine(config) as engine:          # keeps its Ray actors between jobs
        engine.run(problems, "runs/a"); engine.run(other_problems, "runs/b")

Names are imported on first use, so ``import ponder`` loads neither Ray nor torch.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {  # public name -> module that defines it
    "solve": "ponder.engine.solve",
    "load_config": "ponder.config",
    "Config": "ponder.config",
    "ConfigError": "ponder.config",
    "Engine": "ponder.engine.engine",
    "run_job": "ponder.engine.engine",
    "run_inprocess": "ponder.engine.engine",
    "Problem": "ponder.tasks.base",
    "get_task": "ponder.tasks",
    "load_problems": "ponder.tasks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
