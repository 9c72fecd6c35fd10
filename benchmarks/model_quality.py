"""Quality of the embedded models on the Game-of-24 test puzzles (rows 900-999 of 24.csv).

Two measurements, both on CPU and in process (no Ray):
- ``coverage``: the generator alone. ``--samples`` whole solutions per puzzle at
  temperature 1; pass@1 and coverage@k for k = 1..samples with the unbiased
  estimator of Chen et al. 2021, ``1 - C(n - c, k) / C(n, k)``.
- ``search``: best-of-N and PRM beam search with the learned verifier, driven by
  ``ponder.search.scheduler.Scheduler``; solve rate (exact check of the chosen
  answer) and the FLOPs the budget ledger charged (generator + verifier).

Usage:
    python benchmarks/model_quality.py coverage --samples 64
    python benchmarks/model_quality.py search
    python benchmarks/model_quality.py search --only beam:8x8 --budget 2e10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from itertools import count
from pathlib import Path

import torch

from ponder.actors.backends.embedded import EmbeddedGenerator, EmbeddedVerifier
from ponder.search.budget import BudgetManager
from ponder.search.messages import GenerateRequest
from ponder.search.scheduler import Scheduler
from ponder.search.scripted import run_scheduled
from ponder.search.strategies import get_strategy
from ponder.search.tree import Tree
from ponder.tasks import game24

# name -> (strategy, params): the search settings measured by default, cheapest first
SEARCHES = {
    "best_of_n:4": ("best_of_n", {"n": 4}),
    "best_of_n:16": ("best_of_n", {"n": 16}),
    "best_of_n:64": ("best_of_n", {"n": 64}),
    "beam:4x4": ("beam", {"beam_width": 4, "expansion_factor": 4}),
    "beam:8x8": ("beam", {"beam_width": 8, "expansion_factor": 8}),
}


def test_puzzles(limit: int = 0) -> list[list[int]]:
    """The numbers of test puzzles 900-999 (the first ``limit`` of them if > 0)."""
    puzzles = [game24.parse_numbers(p.problem) for p in game24.puzzles_in_test_split()]
    return puzzles[:limit] if limit > 0 else puzzles


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that k of n samples (c of them right) contain a right one."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def prompt_of(numbers) -> str:
    return f"Input: {' '.join(map(str, numbers))}\n"


def coverage(gen: EmbeddedGenerator, puzzles, num_samples: int, temperature: float, seed: int,
             puzzles_per_call: int = 10) -> dict:
    """Sample ``num_samples`` whole solutions per puzzle; count the right ones."""
    num_right = []
    start = time.time()
    for first in range(0, len(puzzles), puzzles_per_call):
        chunk = puzzles[first:first + puzzles_per_call]
        reqs = [GenerateRequest(first + j, prompt_of(nums), n=num_samples, max_new_tokens=256, stop=(),
                                temperature=temperature, seed=seed + first + j) for j, nums in enumerate(chunk)]
        for nums, res in zip(chunk, gen.generate(reqs)):
            answers = [game24.extract_answer(text.split("\n")) for text in res.texts]
            num_right.append(sum(bool(a) and game24.verify(nums, a) for a in answers))
        print(f"  coverage: {first + len(chunk)}/{len(puzzles)} puzzles, {time.time() - start:.0f}s",
              file=sys.stderr, flush=True)
    ks = list(range(1, num_samples + 1))
    cov = {k: sum(pass_at_k(num_samples, c, k) for c in num_right) / len(puzzles) for k in ks}
    return {"num_samples": num_samples, "temperature": temperature, "num_right": num_right,
            "pass@1": cov[1], "coverage@k": cov, "seconds": round(time.time() - start, 1)}


def search(name: str, gen: EmbeddedGenerator, ver: EmbeddedVerifier, puzzles, budget: int | None,
           seed: int) -> dict:
    """Run one search setting on every puzzle through the Scheduler; solve rate and FLOPs."""
    strategy_name, params = SEARCHES[name]
    cls = get_strategy(strategy_name)
    task = game24.Game24Task()
    ledger = BudgetManager(flops_per_problem=budget)
    scheduler = Scheduler(ledger, gen.model_spec(), ver.model_spec())
    ids = count()
    for i, nums in enumerate(puzzles):
        tree = Tree(str(i), prompt_of(nums))
        scheduler.add(cls(tree, task, cls.Params.from_dict(params), seed + i, lambda: next(ids)))
    start = time.time()
    answers = run_scheduled(scheduler, gen, ver)
    solved, totals = 0, {}
    for answer in answers:
        nums = puzzles[int(answer.problem_id)]
        solved += bool(answer.answer) and game24.verify(nums, answer.answer)
        for key, value in answer.extra["stats"].items():
            totals[key] = totals.get(key, 0) + value
    cached = totals["generator_cached_tokens"] + totals["verifier_cached_tokens"]
    prompt = totals["generator_prompt_tokens"] + totals["verifier_prompt_tokens"]
    return {"search": name, "params": params, "budget_per_problem": budget, "solved": solved,
            "num_puzzles": len(puzzles), "solve_rate": solved / len(puzzles),
            "mean_flops": totals["flops"] / len(answers), "cached_prompt_fraction": cached / max(1, prompt),
            "totals": totals, "seconds": round(time.time() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["coverage", "search", "all"])
    parser.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    parser.add_argument("--samples", type=int, default=64, help="samples per puzzle for coverage")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--only", action="append", default=None, choices=sorted(SEARCHES),
                        help="search settings to run (default: all); repeatable")
    parser.add_argument("--budget", type=float, default=None, help="FLOP cap per problem (default: none)")
    parser.add_argument("--limit", type=int, default=0, help="first N test puzzles only (0 = all 100)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    puzzles = test_puzzles(args.limit)
    gen = EmbeddedGenerator(model_path=args.weights)
    report: dict = {"num_puzzles": len(puzzles), "generator_params": gen.model_spec().num_params}
    if args.what in ("coverage", "all"):
        cov = coverage(gen, puzzles, args.samples, args.temperature, args.seed)
        report["coverage"] = cov
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= args.samples]
        print("| k | " + " | ".join(map(str, ks)) + " |\n|---|" + "---|" * len(ks))
        print("| coverage@k | " + " | ".join(f"{cov['coverage@k'][k]:.1%}" for k in ks) + " |")
    if args.what in ("search", "all"):
        budget = int(args.budget) if args.budget is not None else None
        ver = EmbeddedVerifier(model_path=args.weights)
        report["verifier_params"] = ver.model_spec().num_params
        report["search"] = []
        print("| search | solved | mean FLOPs/puzzle | prompt tokens cached | seconds |\n|---|---|---|---|---|")
        for name in args.only or list(SEARCHES):
            gen.clear_cache()
            ver.clear_cache()
            row = search(name, gen, ver, puzzles, budget, args.seed)
            report["search"].append(row)
            print(f"| {name} | {row['solved']}/{row['num_puzzles']} | {row['mean_flops']:.3g} | "
                  f"{row['cached_prompt_fraction']:.0%} | {row['seconds']} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
