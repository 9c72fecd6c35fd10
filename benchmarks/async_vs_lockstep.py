"""The engine against a lockstep search loop: the same search, the same replicas, the same batches.

    python benchmarks/async_vs_lockstep.py            # 64 problems, 3 repeats (~3 min)
    python benchmarks/async_vs_lockstep.py --quick    # 32 problems, 1 repeat (~1 min)

Both run PRM beam search (beam width 4, expansion factor 4) over the same scripted
problems (solutions of 2 to 6 steps, so trees finish at different depths), with
the same strategy objects and seeds, on the same Ray actors: one generator and one
verifier replica, scripted fakes whose calls take a fixed time by sleeping
(``benchmarks/_fakes.py``), like a model whose cost grows with the batch:

    generator call: 5 ms + 2 ms a sample        verifier call: 5 ms + 2 ms a path

- **engine**: ``Engine.run`` (``ponder.cluster.engine``): requests of every tree are
  scheduled as they appear and both replicas work at the same time.
- **lockstep** (search-and-learn style): each round gathers the requests of every
  tree, generates for all of them (batches of ``max_batch_requests``, all
  dispatched at once to the same pool), waits for the last one, then scores all,
  waits, and hands every result back before the next round (the trees then select).

Same search work: every problem must end with the same answer and node count both
ways (checked and printed). Speedup = lockstep wall / engine wall, per repeat
(alternating), median over repeats. Busy shares of both replicas (time inside
calls / wall, from the actors' counters) show where the time went.

What overlap alone can give: lockstep keeps one replica busy at a time, so its
wall is about G + V (the two replicas' busy seconds); an engine that kept both
busy all the time would take max(G, V). ``overlap_bound`` = (G + V) / max(G, V),
from the lockstep run, is that ceiling: 2 when generator and verifier cost the
same, less otherwise. Beating it would need a lockstep that also waits inside a
phase (e.g. static batches that last as long as their longest sample), which
these fakes, whose cost is linear in the batch, do not model.
"""

from __future__ import annotations

import itertools
import time

from _common import (FAKES, busy_seconds, emit, make_config, median, parser, ray_engine,
                     ray_session, role, say, timed_run)
from _fakes import ScriptedQATask, scripted_problems

from ponder.cluster.engine import problem_seed
from ponder.search import get_strategy
from ponder.search.messages import GenerateRequest, Request, Result
from ponder.search.strategies.base import Answer, JobContext
from ponder.search.tree import Tree

GOAL = 2.0
GENERATOR = {"batch_latency_s": 0.005, "sample_latency_s": 0.002}
VERIFIER = {"batch_latency_s": 0.005, "path_latency_s": 0.002}
BEAM = {"beam_width": 4, "expansion_factor": 4}
ENGINE = {"max_batch_requests": 32, "max_in_flight_batches": 2}
MIN_STEPS, MAX_STEPS = 2, 6
SEED = 7


def config_for(specs: list[dict]):
    """One generator and one verifier replica of the latency fakes, knowing ``specs``."""
    generator = role(f"{FAKES}:ScriptedLatencyGenerator", {**GENERATOR, "problems": specs, "seed": 1},
                     num_cpus=0.5)
    verifier = role(f"{FAKES}:ScriptedLatencyVerifier", {**VERIFIER, "problems": specs, "seed": 1},
                    num_cpus=0.5)
    return make_config("beam", BEAM, generator, verifier, mode="ray", engine=ENGINE, seed=SEED)


def lockstep(engine, problems) -> tuple[float, list[Answer]]:
    """Run the job round by round (generate all, score all, deliver all); wall seconds and answers."""
    config, task, pools = engine.config, engine.task, engine.pools()
    cls = get_strategy(config.search.strategy)
    params = cls.Params.from_dict(config.search.params)
    request_ids = itertools.count(10**9)  # apart from the engine's ids on the same pools
    context = JobContext()
    strategies = [cls(Tree(p.problem_id, task.prompt(p), task.step_delimiter), task, params,
                      problem_seed(config.search.seed, i), request_ids.__next__, context)
                  for i, p in enumerate(problems)]
    start = time.perf_counter()
    while True:
        asked = [(s, r) for s in strategies if not s.done for r in s.requests()]
        if not asked:
            break
        generate = [r for _, r in asked if isinstance(r, GenerateRequest)]
        score = [r for _, r in asked if not isinstance(r, GenerateRequest)]
        results = run_phase(pools, pools.generator, generate, config.engine.max_batch_requests)
        results.update(run_phase(pools, pools.verifier, score, config.engine.max_batch_requests))
        for strategy, request in asked:
            strategy.on_result(request, results[request.request_id])
    wall = time.perf_counter() - start
    if not all(s.done for s in strategies):
        raise RuntimeError("lockstep: a strategy is unfinished with nothing to ask")
    return wall, [s.answer() for s in strategies]


def run_phase(pools, pool, requests: list[Request], batch_size: int) -> dict[int, Result]:
    """Dispatch every request (in batches) to ``pool`` at once; wait for all; request_id -> result."""
    for i in range(0, len(requests), batch_size):
        pool.dispatch(requests[i:i + batch_size])
    results: dict[int, Result] = {}
    while len(results) < len(requests):
        for result in pools.collect(1.0):
            results[result.request_id] = result
        if pool.pop_failed():
            raise RuntimeError(f"lockstep: a request failed: {pool.last_error}")
    return results


def overlap_bound(busy_s: list[float]) -> float:
    """(G + V) / max(G, V) of the replicas' busy seconds: the most that overlap alone can give."""
    return sum(busy_s) / max(max(busy_s), 1e-9)


def same_work(engine_lines: list[dict], answers: list[Answer]) -> int:
    """How many problems differ in answer or node count between the two runs."""
    by_id = {line["id"]: line for line in engine_lines}
    return sum((by_id[a.problem_id]["answer"], by_id[a.problem_id]["num_nodes"]) != (a.answer, a.num_nodes)
               for a in answers)


def main() -> None:
    args = parser(__doc__).parse_args()
    num_problems = 32 if args.quick else 64
    repeats = args.repeats or (1 if args.quick else 3)
    problems, specs = scripted_problems(num_problems, MIN_STEPS, MAX_STEPS)
    say(f"beam {BEAM} on {num_problems} scripted problems ({MIN_STEPS}-{MAX_STEPS} steps), "
        f"generator {GENERATOR}, verifier {VERIFIER}, engine {ENGINE}, {repeats} repeat(s)")
    rows = []
    with ray_session(num_cpus=2), ray_engine(config_for(specs), ScriptedQATask()) as engine:
        pools = engine.pools()
        timed_run(engine, problems[:4])  # warm-up
        lockstep(engine, problems[:4])
        for i in range(repeats):
            before = busy_seconds(pools.generator) + busy_seconds(pools.verifier)
            run = timed_run(engine, problems)
            middle = busy_seconds(pools.generator) + busy_seconds(pools.verifier)
            lock_wall, answers = lockstep(engine, problems)
            after = busy_seconds(pools.generator) + busy_seconds(pools.verifier)
            row = {"engine_s": run.wall_s, "lockstep_s": lock_wall,
                   "speedup": lock_wall / run.wall_s, "differ": same_work(run.lines, answers),
                   "engine_busy": [(m - b) / run.wall_s for b, m in zip(before, middle)],
                   "lockstep_busy": [(a - m) / lock_wall for m, a in zip(middle, after)],
                   "overlap_bound": overlap_bound([a - m for m, a in zip(middle, after)]),
                   "accuracy": run.summary["accuracy"]}
            rows.append(row)
            say(f"  repeat {i + 1}: engine {run.wall_s:.2f} s (generator busy {row['engine_busy'][0]:.0%}, "
                f"verifier {row['engine_busy'][1]:.0%}), lockstep {lock_wall:.2f} s (generator "
                f"{row['lockstep_busy'][0]:.0%}, verifier {row['lockstep_busy'][1]:.0%}): "
                f"{row['speedup']:.2f}x (overlap bound {row['overlap_bound']:.2f}x); problems with "
                f"different results: {row['differ']}")
    speedup = median([r["speedup"] for r in rows])
    differ = max(r["differ"] for r in rows)
    say(f"engine {median([r['engine_s'] for r in rows]):.2f} s vs lockstep "
        f"{median([r['lockstep_s'] for r in rows]):.2f} s: {speedup:.2f}x, "
        f"{'meets' if speedup >= GOAL else 'BELOW'} the goal of {GOAL}x; same search work: "
        f"{'yes' if differ == 0 else f'NO ({differ} problems differ)'}")
    bound = median([r["overlap_bound"] for r in rows])
    say(f"overlap bound (G + V) / max(G, V) = {bound:.2f}x: the engine reaches {speedup / bound:.0%} of it")
    emit("async_vs_lockstep", speedup=speedup, goal=GOAL, same_work=differ == 0,
         overlap_bound=bound,
         engine_s=median([r["engine_s"] for r in rows]),
         lockstep_s=median([r["lockstep_s"] for r in rows]),
         repeats_speedup=[r["speedup"] for r in rows],
         engine_busy=rows[len(rows) // 2]["engine_busy"],
         lockstep_busy=rows[len(rows) // 2]["lockstep_busy"],
         accuracy=rows[0]["accuracy"], num_problems=num_problems, quick=args.quick)


if __name__ == "__main__":
    main()
