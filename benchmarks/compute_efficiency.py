"""Compute efficiency: the FLOPs search needs to match best-of-N's accuracy at its largest budget.

    python benchmarks/compute_efficiency.py            # puzzles 900-999 (~30-40 min on a 2-core box)
    python benchmarks/compute_efficiency.py --quick    # 16 puzzles, a smaller grid (~2 min)
    python benchmarks/compute_efficiency.py --model-path DIR --ns 4,16 --limit 20   # other weights, sizes
    python benchmarks/compute_efficiency.py --searches beam     # only one of the searches

Game-of-24 test puzzles 900-999, the embedded generator and verifier (shipped
weights), the engine in process (``ray.mode: inprocess``, 1 torch thread; fresh
backends per cell, so no cell profits from another's prefix cache). Strategy
settings are those of ``configs/sweep_game24.yaml``. FLOPs are what the budget
ledger charged, generator + verifier over all puzzles (2 x params x tokens
computed + attention).

Each strategy climbs its own budget knob, smallest first, until it reaches the
target accuracy A and the next rung confirms it (so a lucky draw on a few
puzzles does not count); the FLOPs spent at the first of the two rungs over F is
its ratio (a measured cell, not interpolated). Goal: <= 0.25. A strategy that
never reaches A gets no ratio.

1. best-of-N, knob N = ``NS`` samples a puzzle, every sample scored, no cap
   (under a per-puzzle cap the scheduler shrinks N to the whole cap and the
   score request no longer fits, see ``--capped-best-of-n``). The largest N is
   best-of-N's largest budget: its accuracy A and the FLOPs it spent F.
2. beam, knob its size: ``beam_width`` = ``BEAM_WIDTHS`` x ``expansion_factor``
   4, no cap, as Snell et al. (2024) give beam search a budget of N
   generations a level. (A per-puzzle cap on a fixed beam does not size it: a
   5 x 4 beam capped below what it needs stops mid-search with no answer.)
3. compute_optimal, knob the per-puzzle FLOP cap (its allocator sizes each
   puzzle's search to it): caps from 1/64 of F's per-puzzle mean upwards in x2
   steps (x4 with --quick).

``--capped-best-of-n`` also runs best-of-N the sweep's way (N = 1,024 under the
same per-puzzle caps), to show what the cap does to it; ``--capped-beam`` runs
``configs/game24.yaml``'s 5 x 4 beam under those caps with ``pace`` on and off,
to show what pacing does under a cap too small for the beam.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from _common import REPO, emit, parser, run_once, say

from ponder.config import load_config
from ponder.tasks import game24

GOAL = 0.25
BASE = REPO / "configs" / "game24.yaml"
SWEEP = REPO / "configs" / "sweep_game24.yaml"
NS = (4, 16, 64)  # best-of-N sizes; the largest sets the target
QUICK_NS = (4, 16)
SEARCHES = ("compute_optimal", "beam")
BEAM_WIDTHS = (1, 2, 3, 4, 5, 6, 8)  # beam sizes climbed (x expansion_factor 4 samples a level)
QUICK_BEAM_WIDTHS = (1, 2, 4, 6)
MIN_FRACTION = 1 / 64  # the search strategies' caps start at this share of best-of-N's spend


def config_for(strategy: str, budget: float | None, model_path: str | None, **params):
    """configs/game24.yaml in process, ``strategy`` as the sweep sets it up (``params`` over it)."""
    data = yaml.safe_load(BASE.read_text())
    swept = dict(yaml.safe_load(SWEEP.read_text())["strategy_params"].get(strategy) or {})
    swept.pop("by_budget", None)  # the sweep's per-grid-budget sizes: this benchmark has its own caps
    base = dict(data["search"]["params"]) if strategy == data["search"]["strategy"] else {}
    search_params = {**base, **swept, **params}  # beam: game24.yaml's, width from params
    data["search"] = {"strategy": strategy, "seed": 0, "params": search_params}
    data["budget"].update(flops_per_problem=budget, flops_total=None)
    for role in ("generator", "verifier"):
        data[role]["model_path"] = model_path
    data["ray"]["mode"] = "inprocess"
    data["output"]["progress"] = "off"
    return load_config(data=data)


def cell(strategy: str, budget: float | None, problems: list, model_path: str | None,
         **params) -> dict:
    """Run one job; its accuracy, spent FLOPs, wall time and why problems stopped."""
    config = config_for(strategy, budget, model_path, **params)
    start = time.perf_counter()
    run = run_once(config, None, problems)
    row = {"strategy": strategy, "budget": budget, **params, "accuracy": run.summary["accuracy"],
           "flops": run.summary["total_flops"], "wall_s": time.perf_counter() - start,
           "stop_reasons": run.summary["stop_reasons"]}
    size = (f"N = {params['n']:4d}" if "n" in params else
            f"{params['beam_width']:2d} x 4  " if "beam_width" in params else
            f"pace {'on ' if params['pace'] else 'off'}" if "pace" in params else "        ")
    cap = f"cap {budget:8.2e}/puzzle" if budget is not None else "uncapped          "
    say(f"  {strategy:16s} {size} {cap}: accuracy {row['accuracy']:6.1%}, spent "
        f"{row['flops']:9.3e} FLOPs ({row['flops'] / len(problems):8.2e}/puzzle), "
        f"{row['wall_s']:5.0f} s, stops {row['stop_reasons']}")
    return row


def search_budgets(per_problem: float, step: float) -> list[float]:
    """Caps of the search strategies: ``step`` x steps from ``per_problem * MIN_FRACTION`` on,
    up to ``per_problem`` (best-of-N's own spend a puzzle), rounded to 2 significant digits."""
    budgets, b = [], per_problem * MIN_FRACTION
    while b <= per_problem * 1.0001:
        budgets.append(float(f"{b:.2g}"))
        b *= step
    return budgets


def first_reaching(strategy: str, rungs: list[tuple[float | None, dict]], target: float,
                   problems: list, model_path: str | None, rows: list[dict]) -> dict | None:
    """Run ``strategy`` at ascending ``rungs`` (per-puzzle cap, search parameters) until
    accuracy >= target at two rungs in a row (or at the last one); the first of the two,
    or None. Every cell run goes to ``rows``."""
    candidate = None
    for budget, params in rungs:
        row = cell(strategy, budget, problems, model_path, **params)
        rows.append(row)
        if row["accuracy"] < target:
            candidate = None
        elif candidate is not None:
            return candidate
        else:
            candidate = row
    return candidate


def rungs_of(strategy: str, budgets: list[float], quick: bool) -> list[tuple[float | None, dict]]:
    """The budget knob ``strategy`` climbs: beam its width (uncapped), the rest the cap."""
    if strategy == "beam":
        return [(None, {"beam_width": w}) for w in (QUICK_BEAM_WIDTHS if quick else BEAM_WIDTHS)]
    return [(b, {}) for b in budgets]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    p = parser(__doc__)
    p.add_argument("--model-path", default=None, help="embedded weights dir (default: shipped)")
    p.add_argument("--ns", default=None, help="best-of-N sizes, comma-separated (e.g. 4,16,64)")
    p.add_argument("--limit", type=int, default=None, help="only the first N puzzles")
    p.add_argument("--searches", default=",".join(SEARCHES),
                   help=f"searches to measure, comma-separated, '' for none (default: {','.join(SEARCHES)})")
    p.add_argument("--capped-best-of-n", action="store_true",
                   help="also run best-of-N under the search caps (N = 1,024, the sweep's way)")
    p.add_argument("--capped-beam", action="store_true",
                   help="also run the 5 x 4 beam under the search caps, paced and not")
    args = p.parse_args()
    searches = tuple(s for s in args.searches.split(",") if s)
    unknown = sorted(set(searches) - set(SEARCHES))
    if unknown:
        p.error(f"--searches: unknown {unknown}; valid: {', '.join(SEARCHES)}")
    problems = game24.puzzles_in_test_split()
    problems = problems[::6][:16] if args.quick else problems
    problems = problems[: args.limit] if args.limit else problems
    ns = tuple(int(n) for n in args.ns.split(",")) if args.ns else QUICK_NS if args.quick else NS
    say(f"{len(problems)} test puzzles; best-of-N with N = {list(ns)}; then {', '.join(searches)}")
    rows = [cell("best_of_n", None, problems, args.model_path, n=n) for n in ns]
    target, target_flops = rows[-1]["accuracy"], rows[-1]["flops"]
    say(f"target: best-of-{ns[-1]} accuracy {target:.1%} with {target_flops:.3e} FLOPs")
    budgets = search_budgets(target_flops / len(problems), 4 if args.quick else 2)
    ratios: dict[str, float | None] = {s: None for s in searches}
    reached_at: dict[str, Any] = {}  # strategy -> the cap (compute_optimal) or width (beam)
    if not target:
        say("best-of-N solved nothing: no target to reach, no ratio (untrained weights?)")
    for strategy in searches if target else ():
        hit = first_reaching(strategy, rungs_of(strategy, budgets, args.quick), target, problems,
                             args.model_path, rows)
        if hit is not None:
            ratios[strategy] = hit["flops"] / target_flops
            reached_at[strategy] = (f"beam_width {hit['beam_width']}" if strategy == "beam"
                                    else f"cap {hit['budget']:.2e}")
        got = ratios[strategy]
        say(f"{strategy}: " + (f"reaches {target:.1%} at {reached_at[strategy]} with "
                               f"{got:.3f} x best-of-N's FLOPs" if got is not None else
                               "does not reach best-of-N's accuracy within the grid"))
    if args.capped_best_of_n:
        say("best-of-N the sweep's way (N = 1,024 under a per-puzzle cap):")
        rows += [cell("best_of_n", b, problems, args.model_path) for b in budgets]
    if args.capped_beam:
        say("beam 5 x 4 under the per-puzzle caps, paced (pace: true) and not:")
        rows += [cell("beam", b, problems, args.model_path, pace=pace)
                 for b in budgets for pace in (True, False)]
    best = min((r for r in ratios.values() if r is not None), default=None)
    say(f"best ratio {best if best is None else round(best, 3)}: "
        f"{'meets' if best is not None and best <= GOAL else 'MISSES'} the goal of <= {GOAL}")
    emit("compute_efficiency", ratio_compute_optimal=ratios.get("compute_optimal"),
         ratio_beam=ratios.get("beam"), goal=GOAL, best_of_n=ns[-1], best_of_n_accuracy=target,
         best_of_n_flops=target_flops, reached_at_cap=reached_at, cells=rows,
         num_problems=len(problems), model_path=args.model_path, quick=args.quick)


if __name__ == "__main__":
    main()
