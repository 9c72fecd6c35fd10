"""The sweep file: a base config and a grid over it; expanded into one validated Config per cell.

    base: game24.yaml        # a config file (relative to this file, else to the cwd; its own
                             # base: chain is followed) or an inline config mapping
    set: [key=value, ...]    # overrides of the base, applied before the grid
    problems: null           # problems file; default: the base's task.problems, else the task's data
    range: "900:1000"        # quote it: YAML reads some a:b as base-60 numbers
    out: runs/sweep-game24   # default output directory
    grid:                    # dotted config key -> values; a cell per combination, in this order
      strategy: [best_of_n, beam, compute_optimal]   # short for search.strategy
      budget.flops_per_problem: [1e10, 1e11]          # required: it is a FLOPs sweep
      generator.model_path: [null, path/to/bigger]    # optional
    strategy_params:         # search.params of each strategy's cells
      best_of_n: {n: 256}
      beam:
        max_step_tokens: 48
        by_budget:           # params of one budget's cells (key: a grid budget), over the rest
          1e9: {beam_width: 1, expansion_factor: 2}
          1.5e10: {beam_width: 5, expansion_factor: 4}

A grid without a strategy axis runs ``DEFAULT_STRATEGIES`` (best-of-N beside
compute-optimal, the comparison Snell et al. 2024 make). A cell's ``search.params``
are the base's if the cell runs the base's strategy, else empty, then updated by
``strategy_params`` of its strategy, then by its ``by_budget`` entry for the cell's
budget (a search that must grow with the budget: a wider beam, more DVTS subtrees);
``search.params.*`` axes win over all of them.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ponder.sweep.names import BUDGET_KEY, MODEL_KEY, STRATEGY_KEY, cell_name, unique_names
from ponder.config import Config, ConfigError, SearchConfig, apply_override, load_config
from ponder.search import iter_strategies  # importing ponder.search registers every strategy

AXIS_ALIASES = {"strategy": STRATEGY_KEY, "budget": BUDGET_KEY, "model": MODEL_KEY}  # short -> dotted
DEFAULT_STRATEGIES = ("best_of_n", "beam", "compute_optimal")
SWEEP_KEYS = ("base", "set", "problems", "range", "out", "grid", "strategy_params")
LITERAL_KEYS = ("problems", "range", "out")  # strings; an override keeps the text as typed
FIXED_SECTIONS = ("task", "output", "ray")  # one value for the whole sweep: not a grid axis
BY_BUDGET = "by_budget"  # in strategy_params.<strategy>: budget -> params of that budget's cells


class SweepError(ConfigError):
    """A bad sweep file or sweep override; ``str()`` is one line naming the key."""


@dataclass
class SweepSpec:
    """A parsed sweep file: the base config (a mapping, overrides applied) and the grid."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]  # dotted config key -> values; axis order is cell order
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy -> params
    problems: str | None = None
    range: str | None = None
    out: str | None = None


@dataclass
class Cell:
    """One grid point: its directory name, its coordinates and the Config it runs."""

    name: str
    axes: dict[str, Any]  # dotted config key -> value, as written in the grid
    config: Config

    @property
    def strategy(self) -> str:
        return self.config.search.strategy

    @property
    def budget(self) -> int | None:
        return self.config.budget.flops_per_problem

    @property
    def model(self) -> str:
        """The generator's model path, or its backend's name when it has none (embedded default)."""
        return self.config.generator.model_path or self.config.generator.backend

    def other_axes(self) -> str:
        """The axes besides strategy, budget and model, as ``key=value,key=value``."""
        return ",".join(f"{k}={v}" for k, v in self.axes.items()
                        if k not in (STRATEGY_KEY, BUDGET_KEY, MODEL_KEY))


def load_sweep(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
               data: dict[str, Any] | None = None) -> SweepSpec:
    """Read a sweep file, apply ``key=value`` overrides, and check every cell's config.

    Args:
        path: the sweep YAML; a relative ``base`` path is looked up next to it first.
        overrides: ``grid.<dotted key>=[...]``, ``strategy_params.<s>.<k>=v``, ``problems=``,
            ``range=``, ``out=`` change the sweep; any other key changes the base config.
        data: a sweep mapping to use instead of reading ``path``.

    Returns:
        The SweepSpec; ``expand_grid`` of it is known to succeed.

    Raises:
        SweepError: a bad sweep key or value. ConfigError: a cell's config is invalid
            (the message names the cell).
    """
    raw = copy.deepcopy(data) if data is not None else _read_mapping(path, "sweep file")
    base_overrides = list(_as_list(raw.get("set"), "set"))
    for item in overrides:
        if item.partition("=")[0].strip().split(".")[0] in SWEEP_KEYS:
            _apply_sweep_override(raw, item)
        else:
            base_overrides.append(item)
    unknown = sorted(str(k) for k in raw if k not in SWEEP_KEYS)
    if unknown and "grid" not in raw:  # a `ponder solve` config given to `ponder sweep`
        where = repr(str(path)) if path is not None else "the sweep mapping"
        raise SweepError(f"{where} is not a sweep file: it has no grid and {unknown[0]!r} is not a "
                         f"sweep key; a sweep file names a base config and a grid (keys: "
                         f"{', '.join(SWEEP_KEYS)}), e.g. configs/sweep_game24.yaml")
    if unknown:
        raise SweepError(f"unknown sweep key {unknown[0]!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    base = _load_base(raw.get("base"), Path(path).parent if path is not None else None)
    for item in base_overrides:
        apply_override(base, item)
    grid = _parse_grid(raw.get("grid"))
    spec = SweepSpec(base=base, grid=grid,
                     strategy_params=_parse_strategy_params(raw.get("strategy_params")),
                     problems=_optional_str(raw.get("problems"), "problems"),
                     range=_optional_str(raw.get("range"), "range"),
                     out=_optional_str(raw.get("out"), "out"))
    expand_grid(spec)
    return spec


def expand_grid(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid, the first axis varying slowest, each with its validated Config.

    Raises:
        ConfigError: a cell's config is invalid; the message names the cell.
    """
    keys = list(spec.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())]
    names = unique_names([cell_name(axes) for axes in points], points)
    cells = []
    for name, axes in zip(names, points):
        try:
            config = load_config(data=cell_config_data(spec, axes))
        except ConfigError as e:
            raise ConfigError(f"sweep cell {name}: {e}") from None
        cells.append(Cell(name, axes, config))
    return cells


def cell_config_data(spec: SweepSpec, axes: dict[str, Any]) -> dict[str, Any]:
    """The config mapping of the cell at ``axes``: the base, the axes, then its strategy's params."""
    raw = copy.deepcopy(spec.base)
    base_search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    base_strategy = base_search.get("strategy", SearchConfig().strategy)
    strategy = axes.get(STRATEGY_KEY, base_strategy)
    params = dict(base_search.get("params") or {}) if strategy == base_strategy else {}
    params.update(spec.strategy_params.get(strategy, {}))
    by_budget = params.pop(BY_BUDGET, None) or {}
    if BUDGET_KEY in axes:
        budget = _budget_number(axes[BUDGET_KEY])
        params.update(next((v for k, v in by_budget.items() if _budget_number(k) == budget), {}))
    _set_dotted(raw, "search.params", params)
    for key, value in axes.items():
        _set_dotted(raw, key, value)
    return raw


# -- parsing ------------------------------------------------------------------------------

def _read_mapping(path: str | Path | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SweepError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{what} {str(path)!r} is not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(f"{what} {str(path)!r} must be a mapping, got {type(raw).__name__}")
    return raw


def _load_base(base: Any, sweep_dir: Path | None) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if not isinstance(base, str):
        raise SweepError(f"base must be a config file path or a mapping, got {base!r}")
    tried = [sweep_dir / base] if sweep_dir is not None and not Path(base).is_absolute() else []
    tried.append(Path(base))
    for candidate in tried:
        if candidate.is_file():  # through load_config, so the file's own `base:` chain is followed
            return load_config(candidate).to_dict()
    raise SweepError(f"base config {base!r} not found (looked at {', '.join(map(str, tried))})")


def _apply_sweep_override(raw: dict[str, Any], item: str) -> None:
    key, _, text = item.partition("=")
    head, _, axis = key.strip().partition(".")
    if head in LITERAL_KEYS and not axis:  # as typed: YAML would read range=2:4 as 124 (base 60)
        raw[head] = text.strip() or None
    elif head == "grid" and axis:  # grid keys are dotted themselves: set whole, not nested
        grid = raw.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise SweepError(f"grid must be a mapping, got {grid!r}")
        holder: dict[str, Any] = {}
        apply_override(holder, f"value={text}")
        key = AXIS_ALIASES.get(axis, axis)
        # The override replaces the axis, however the file spelled it, where it stood (cell order).
        raw["grid"] = {**{(axis if AXIS_ALIASES.get(str(n), str(n)) == key else n): v
                          for n, v in grid.items()}, axis: holder["value"]}
    else:
        apply_override(raw, item)


def _parse_grid(grid: Any) -> dict[str, list[Any]]:
    if grid is None:
        grid = {}
    if not isinstance(grid, dict):
        raise SweepError(f"grid must be a mapping of config key -> list of values, got {grid!r}")
    axes: dict[str, list[Any]] = {}  # dotted config key -> values
    for name, values in grid.items():
        key = AXIS_ALIASES.get(str(name), str(name))
        if key in axes:
            raise SweepError(f"grid names {key!r} twice (once as {name!r})")
        if key.split(".")[0] in FIXED_SECTIONS:
            raise SweepError(f"grid.{name}: the {key.split('.')[0]} section is one for the whole "
                             f"sweep; set it in base, not in the grid")
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{name} must be a non-empty list, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"grid.{name} lists a value twice: {values!r}")
        axes[key] = list(values)
    if STRATEGY_KEY not in axes:
        axes = {STRATEGY_KEY: list(DEFAULT_STRATEGIES), **axes}
    if BUDGET_KEY not in axes:
        raise SweepError(f"grid needs {BUDGET_KEY}: a list of FLOP budgets per problem "
                         f"(null for uncapped), e.g. [1e10, 1e11]")
    return axes


def _parse_strategy_params(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise SweepError(f"strategy_params must map a strategy to a mapping of its params, got {value!r}")
    known = sorted(iter_strategies())
    for name in value:  # one the grid does not run is fine (a --set may narrow the grid); a typo is not
        if name not in known:
            raise SweepError(f"strategy_params.{name}: unknown strategy {name!r}; valid: {', '.join(known)}")
        _check_by_budget(value[name].get(BY_BUDGET), f"strategy_params.{name}.{BY_BUDGET}")
    return {str(k): dict(v) for k, v in value.items()}


def _check_by_budget(value: Any, where: str) -> None:
    # A budget the grid does not run is fine (a --set may narrow the grid), as above.
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise SweepError(f"{where} must map a budget to a mapping of params, got {value!r}")
    for key in value:
        if key is not None and _budget_number(key) is None:
            raise SweepError(f"{where}: {key!r} is not a budget; give FLOPs (e.g. 1e10) or null")


def _budget_number(value: Any) -> float | None:
    """A budget as a number for matching grid values to ``by_budget`` keys (1e10, "1e10", 10_000_000_000)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(str(value).replace("_", ""))
    except ValueError:
        return None


def _as_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{where} must be a list of 'key=value' strings, got {value!r}")
    return value


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    hint = " (quote it: YAML reads some a:b as base-60 numbers)" if where == "range" else ""
    raise SweepError(f"{where} must be a string, got {value!r}{hint}")


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
