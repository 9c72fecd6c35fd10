"""Compute efficiency: the FLOPs search needs to match best-of-N's accuracy at its largest budget.

    python benchmarks/compute_efficiency.py            # puzzles 900-999 (~30-60 min on a busy 2-core box)
    python benchmarks/compute_efficiency.py --quick    # 16 puzzles, a smaller grid (~2 min)
    python benchmarks/compute_efficiency.py --model-path DIR    # other embedded weights

Game-of-24 test puzzles 900-999, the embedded generator and verifier (shipped
weights), the engine in process (``ray.mode: inprocess``, 1 torch thread; a fresh
pair of backends per cell, so no cell profits from another's prefix cache).
Every cell is one job under a per-puzzle FLOP cap (``budget.flops_per_problem``),
with the strategy settings of ``configs/sweep_game24.yaml`` (best-of-N asks for
1,024 samples, so the cap decides how many it draws; beam keeps
``configs/game24.yaml``'s width 5 x 4).

1. best-of-N at every budget of ``BUDGETS``: its accuracy at the largest one, A,
   and the FLOPs it spent there, F (generator + verifier, all puzzles, as charged
   by the budget ledger: 2 x params x tokens computed + attention).
2. compute_optimal and beam at caps from 1/64 of best-of-N's largest upwards (x2
   steps; x4 with --quick) until one reaches A and the next cap confirms it (so a
   lucky draw on a few puzzles does not count); the FLOPs spent at the first of
   the two over F is the ratio (a measured cell, not interpolated). Goal: <= 0.25.
A strategy that never reaches A within the grid gets no ratio (reported as such).
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from _common import REPO, emit, parser, run_once, say

from ponder.config import load_config
from ponder.tasks import game24

GOAL = 0.25
BASE = REPO / "configs" / "game24.yaml"
SWEEP = REPO / "configs" / "sweep_game24.yaml"
BUDGETS = (1e9, 4e9, 1.6e10, 6.4e10)  # best-of-N's per-puzzle caps; the largest sets the target
QUICK_BUDGETS = (1e9, 4e9, 1.6e10)
SEARCHES = ("compute_optimal", "beam")
MIN_FRACTION = 1 / 64  # the search strategies' budgets start at this share of the largest


def config_for(strategy: str, budget: float, model_path: str | None):
    """configs/game24.yaml in process, with ``strategy`` as the sweep sets it up, under ``budget``."""
    data = yaml.safe_load(BASE.read_text())
    params = yaml.safe_load(SWEEP.read_text())["strategy_params"].get(strategy)
    data["search"] = {"strategy": strategy, "seed": 0,
                      "params": params if params is not None else data["search"]["params"]}
    data["budget"].update(flops_per_problem=budget, flops_total=None)
    for role in ("generator", "verifier"):
        data[role]["model_path"] = model_path
    data["ray"]["mode"] = "inprocess"
    data["output"]["progress"] = "off"
    return load_config(data=data)


def cell(strategy: str, budget: float, problems: list, model_path: str | None) -> dict:
    """Run one (strategy, budget) job; its accuracy, spent FLOPs and wall time."""
    config = config_for(strategy, budget, model_path)
    start = time.perf_counter()
    run = run_once(config, None, problems)
    row = {"strategy": strategy, "budget": budget, "accuracy": run.summary["accuracy"],
           "flops": run.summary["total_flops"], "wall_s": time.perf_counter() - start}
    say(f"  {strategy:16s} cap {budget:8.2e}/puzzle: accuracy {row['accuracy']:6.1%}, "
        f"spent {row['flops']:9.3e} FLOPs ({row['flops'] / len(problems):8.2e}/puzzle), "
        f"{row['wall_s']:5.0f} s")
    return row


def search_budgets(largest: float, step: float) -> list[float]:
    """Caps of the search strategies: ``step`` x steps from ``largest * MIN_FRACTION`` to ``largest``."""
    budgets, b = [], largest * MIN_FRACTION
    while b <= largest * 1.0001:
        budgets.append(b)
        b *= step
    return budgets


def first_reaching(strategy: str, budgets: list[float], target: float, problems: list,
                   model_path: str | None, rows: list[dict]) -> dict | None:
    """Run ``strategy`` at ascending ``budgets`` until accuracy >= target at two caps in a row
    (or at the last cap); the first of the two, or None. Every cell run goes to ``rows``."""
    candidate = None
    for budget in budgets:
        row = cell(strategy, budget, problems, model_path)
        rows.append(row)
        if row["accuracy"] < target:
            candidate = None
        elif candidate is not None:
            return candidate
        else:
            candidate = row
    return candidate


def main() -> None:
    import torch

    torch.set_num_threads(1)
    p = parser(__doc__)
    p.add_argument("--model-path", default=None, help="embedded weights dir (default: shipped)")
    p.add_argument("--budgets", default=None, help="best-of-N caps, comma-separated (e.g. 1e9,4e9)")
    p.add_argument("--limit", type=int, default=None, help="only the first N puzzles")
    args = p.parse_args()
    problems = game24.puzzles_in_test_split()
    problems = problems[::6][:16] if args.quick else problems
    problems = problems[: args.limit] if args.limit else problems
    budgets = QUICK_BUDGETS if args.quick else BUDGETS
    budgets = tuple(float(b) for b in args.budgets.split(",")) if args.budgets else budgets
    say(f"{len(problems)} test puzzles; best-of-N caps {list(budgets)}; then {', '.join(SEARCHES)}")
    rows = [cell("best_of_n", b, problems, args.model_path) for b in budgets]
    target, target_flops = rows[-1]["accuracy"], rows[-1]["flops"]
    say(f"target: best-of-N accuracy {target:.1%} at cap {budgets[-1]:.2e}, {target_flops:.3e} FLOPs")
    best_bon = max(r["accuracy"] for r in rows)
    if best_bon > target:
        say(f"note: best-of-N is not monotone in budget here (best {best_bon:.1%} at a smaller cap): "
            f"its vote over more samples picks worse answers; the target stays the largest cap's")
    ratios: dict[str, float | None] = {s: None for s in SEARCHES}
    reached_at: dict[str, float] = {}
    if not target:
        say("best-of-N solved nothing: no target to reach, no ratio (untrained weights?)")
    step = 4 if args.quick else 2
    for strategy in SEARCHES if target else ():
        hit = first_reaching(strategy, search_budgets(budgets[-1], step), target, problems,
                             args.model_path, rows)
        if hit is not None:
            ratios[strategy] = hit["flops"] / target_flops
            reached_at[strategy] = hit["budget"]
        got = ratios[strategy]
        say(f"{strategy}: " + (f"reaches {target:.1%} at cap {reached_at[strategy]:.2e} with "
                               f"{got:.3f} x best-of-N's FLOPs" if got is not None else
                               "does not reach best-of-N's accuracy within the grid"))
    best = min((r for r in ratios.values() if r is not None), default=None)
    say(f"best ratio {best if best is None else round(best, 3)}: "
        f"{'meets' if best is not None and best <= GOAL else 'MISSES'} the goal of <= {GOAL}")
    emit("compute_efficiency", ratio_compute_optimal=ratios["compute_optimal"],
         ratio_beam=ratios["beam"], goal=GOAL, best_of_n_accuracy=target,
         best_of_n_best_accuracy=best_bon,
         best_of_n_flops=target_flops, best_of_n_cap=budgets[-1],
         reached_at_cap={k: v for k, v in reached_at.items()},
         cells=[{k: (round(v, 4) if isinstance(v, float) and k != "budget" else v)
                 for k, v in r.items()} for r in rows],
         num_problems=len(problems), model_path=args.model_path, quick=args.quick)


if __name__ == "__main__":
    main()
