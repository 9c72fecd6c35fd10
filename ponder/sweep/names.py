"""The directory names of sweep cells: ``best_of_n__flops1e10__model-default``.

A name is the cell's grid values in axis order (strategy as is, a budget as
``flops<number>`` or ``uncapped``, a generator as ``model-<basename>``, any other
axis as ``<last key part>-<value>``), so the same cell keeps its directory, and its
finished results, from one run of a sweep to the next.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

STRATEGY_KEY = "search.strategy"
BUDGET_KEY = "budget.flops_per_problem"
MODEL_KEY = "generator.model_path"


def cell_name(axes: dict[str, Any]) -> str:
    """The directory name of the cell at ``axes``: its values in axis order, joined by ``__``."""
    parts = []
    for key, value in axes.items():
        if key == STRATEGY_KEY:
            parts.append(_slug(value))
        elif key == BUDGET_KEY:
            parts.append("uncapped" if value is None else "flops" + _short_number(value))
        elif key == MODEL_KEY:
            parts.append("model-" + (_slug(Path(str(value).rstrip("/")).name) if value else "default"))
        else:
            parts.append(f"{key.split('.')[-1]}-{_slug(value)}")
    return "__".join(parts)


def _short_number(value: Any) -> str:
    try:
        number = float(str(value).replace("_", ""))
    except ValueError:
        return _slug(value)
    return f"{number:.3g}".replace("e+", "e").replace("+", "")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "none"


def unique_names(names: list[str], points: list[dict[str, Any]]) -> list[str]:
    """``names`` with a short hash of the axes added to each name that two cells share."""
    # Two model paths with one basename would share a directory: tell them apart by a hash.
    counts = {name: names.count(name) for name in names}
    return [name if counts[name] == 1 else
            f"{name}__{hashlib.sha256(repr(sorted(axes.items())).encode()).hexdigest()[:6]}"
            for name, axes in zip(names, points)]
