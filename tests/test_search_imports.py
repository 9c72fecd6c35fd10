"""ponder.search stays pure Python: importing all of it loads neither ray nor torch."""

import subprocess
import sys

_PROBE = """
import importlib, pkgutil, sys
import ponder.search
loaded = []
for package in ("ponder.search", "ponder.search.strategies"):
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        loaded.append(importlib.import_module(f"{package}.{module.name}").__name__)
assert "ponder.search.strategies.best_of_n" in loaded and "ponder.search.scheduler" in loaded, loaded
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"ray", "torch"})
print(len(loaded), heavy)
"""


def test_search_imports_neither_ray_nor_torch():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    num_modules, heavy = out.stdout.split(" ", 1)
    assert int(num_modules) >= 10
    assert heavy.strip() == "[]", f"ponder.search pulled in {heavy.strip()}"


def test_every_strategy_is_registered_on_import():
    from ponder.search import get_strategy, iter_strategies

    names = list(iter_strategies())
    for name in ("best_of_n", "beam", "dvts", "mcts", "rebase", "compute_optimal"):
        assert name in names and get_strategy(name).name == name
    try:
        get_strategy("nope")
    except ValueError as error:
        assert "'nope'" in str(error) and "best_of_n" in str(error)
    else:
        raise AssertionError("an unknown strategy name must raise ValueError")
