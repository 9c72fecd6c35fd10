"""Engine overhead: node expansions per second through the whole engine, with backends that cost nothing.

    python benchmarks/engine_overhead.py            # 2,000 trees, 5 repeats per mode (~2 min)
    python benchmarks/engine_overhead.py --quick    # 2,000 trees, 2 repeats per mode (~1 min)

The job: PRM beam search (beam width 4, expansion factor 4) on 2,000 scripted
problems whose fake generator is in instant mode (``ScriptedGenerator(
instant_steps=4)``: generic steps, no randomness, the 4th an answer line) and
whose fake verifier scores by a hash of the step. So every tree grows 4 levels
of 16 children, 64 nodes, and the backends' own work is a few microseconds a
request: what is timed is the engine (scheduler, budget ledger, strategies,
batching, pools, dispatch, result routing, results.jsonl), run exactly as
``ponder solve`` runs it (``Engine.run``), with the default engine settings.

Both modes: ``ray.mode: inprocess`` (backends called in the driver) and
``ray.mode: ray`` (one generator and one verifier actor on a local Ray with 2
CPUs). Ray and actor start-up are not timed; a small warm-up job runs first.

A node expansion is one node added to a tree (every node but the roots; one per
sample the search drew). The figure is expansions / wall seconds of the job, the
median over repeats; expansions per CPU second of the driver process is printed
too (on this shared box the driver often gets less than a whole core; in Ray mode
the actors' own CPU is not in it). Where a mode is below the goal (20,000/s), the driver's
cProfile of one extra run shows where its time goes.
"""

from __future__ import annotations

import cProfile
import pstats

from _common import Run, emit, make_config, median, parser, role, say, timed_run, top_profile
from _fakes import ScriptedQATask, instant_problems

from ponder.engine.engine import Engine

GOAL = 20_000  # node expansions per second
BEAM = {"beam_width": 4, "expansion_factor": 4}
INSTANT_STEPS = 4  # levels per tree; the last sample of a path is its answer line
WARMUP_PROBLEMS = 100
# Where driver time goes: (label, function name, file suffix); the outermost match's cumulative time.
PHASES = (("scheduler.schedule", "schedule", "search/scheduler.py"),
          ("scheduler.update (strategies' on_result inside)", "update", "search/scheduler.py"),
          ("strategies' on_result", "on_result", "strategies/levels.py"),
          ("backends called in process", "run_one", "cluster/inprocess.py"),
          ("pool.dispatch (Ray: pickle requests, actor calls)", "dispatch", "actors/pool.py"),
          ("collect (Ray: wait, unpickle results)", "collect", "actors/pool.py"),
          ("finished problems: results.jsonl, trees.jsonl", "_finish", "cluster/jobs.py"),
          ("checkpoints", "checkpoint", "cluster/jobs.py"))


def config_for(mode: str, engine: dict | None = None):
    """The benchmark job's config in ``mode`` (``"inprocess"`` or ``"ray"``)."""
    return make_config(
        "beam", BEAM, mode=mode, ray_num_cpus=2, engine=engine,
        generator=role("scripted", {"instant_steps": INSTANT_STEPS}),
        verifier=role("scripted", {"instant": True}))


def measure(mode: str, num_problems: int, repeats: int, profile: bool) -> dict:
    """Median expansions/s of ``repeats`` jobs in ``mode``, and the driver's profile of one
    more job if ``profile`` or if the median is below the goal (cProfile slows that run)."""
    task, problems = ScriptedQATask(), instant_problems(num_problems)
    runs: list[Run] = []
    with Engine(config_for(mode), task) as engine:
        timed_run(engine, instant_problems(WARMUP_PROBLEMS))
        for i in range(repeats):
            runs.append(timed_run(engine, problems))
            run = runs[-1]
            say(f"  {mode:9s} repeat {i + 1}: {run.num_expansions:,} expansions in {run.wall_s:.2f} s "
                f"= {run.num_expansions / run.wall_s:,.0f}/s (driver CPU {run.cpu_s:.2f} s, "
                f"{run.cpu_us_per_expansion:.1f} us an expansion; {len(run.gc_full_s)} full GCs, "
                f"{sum(run.gc_full_s):.2f} s)")
        rates = [r.num_expansions / r.wall_s for r in runs]
        per_cpu = median([r.num_expansions / r.cpu_s for r in runs])
        result = {"expansions_per_s": median(rates), "repeats": [round(r) for r in rates],
                  "expansions_per_driver_cpu_s": per_cpu,
                  "expansions": runs[0].num_expansions, "wall_s": median([r.wall_s for r in runs]),
                  "driver_cpu_s": median([r.cpu_s for r in runs]),
                  "setup_s": engine.setup_seconds}
        if profile or result["expansions_per_s"] < GOAL:
            prof = cProfile.Profile()
            timed_run(engine, problems, profile=prof)
            result["profile"] = profile_summary(prof)
    return result


def profile_summary(prof: cProfile.Profile) -> dict:
    """Cumulative seconds of the engine's phases and the top own-time functions."""
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(entry[2] for entry in stats.values())
    phases = {}
    for label, name, suffix in PHASES:
        cum = max((entry[3] for (file, _, func), entry in stats.items()
                   if func == name and file.endswith(suffix)), default=0.0)
        if cum:
            phases[label] = round(cum / total, 3)
    return {"profiled_s": round(total, 2), "phase_share": phases, "top": top_profile(prof, 12)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--problems", type=int, default=2000, help="trees per job")
    p.add_argument("--modes", default="inprocess,ray", help="comma-separated: inprocess, ray")
    args = p.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    num_problems = args.problems
    say(f"beam {BEAM} on {num_problems} instant scripted problems, {INSTANT_STEPS} levels a tree, "
        f"{repeats} repeats per mode")
    results = {}
    for mode in args.modes.split(","):
        results[mode] = measure(mode, num_problems, repeats, profile=not args.quick)
    for mode, r in results.items():
        verdict = "meets" if r["expansions_per_s"] >= GOAL else "BELOW"
        say(f"{mode}: {r['expansions_per_s']:,.0f} expansions/s (median of {r['repeats']}), "
            f"{verdict} the goal of {GOAL:,}/s; driver CPU {r['driver_cpu_s']:.2f} s of "
            f"{r['wall_s']:.2f} s wall, {r['expansions_per_driver_cpu_s']:,.0f} expansions per "
            f"driver CPU second")
        if "profile" in r:
            p = r["profile"]
            say(f"  where the driver's time goes (share of {p['profiled_s']} s profiled):")
            for label, share in p["phase_share"].items():
                say(f"    {share:6.1%}  {label}")
            say("  top functions by own time:")
            for line in p["top"]:
                say("    " + line)
    figures = {}
    for mode, r in results.items():
        figures[f"expansions_per_s_{mode}"] = round(r["expansions_per_s"])
        figures[f"ratio_to_goal_{mode}"] = r["expansions_per_s"] / GOAL
        figures[f"best_repeat_{mode}"] = max(r["repeats"])
        figures[f"expansions_per_driver_cpu_s_{mode}"] = round(r["expansions_per_driver_cpu_s"])
    emit("engine_overhead", **figures, goal_per_s=GOAL, num_problems=num_problems,
         expansions_per_job=next(iter(results.values()))["expansions"], repeats=repeats,
         quick=args.quick)


if __name__ == "__main__":
    main()
