"""Backend efficiency: generated tokens per second through the engine over the backend called directly.

    python benchmarks/backend_efficiency.py            # puzzles 900-999, both modes, 3 repeats (~20 min)
    python benchmarks/backend_efficiency.py --quick    # 16 puzzles, both modes (~1-2 min)
    python benchmarks/backend_efficiency.py --model-path DIR    # other embedded weights

The job: ``configs/game24.yaml`` (PRM beam search, width 5, expansion 4, the
embedded generator and verifier, 1 CPU each) on Game-of-24 test puzzles, after a
warm-up job on 4 training puzzles. The backends are the embedded ones wrapped by
``RecordingEmbedded*`` (benchmarks/_fakes.py), which append every batch the engine
sent them to a file. Then the same batches are replayed directly: fresh backends
in this process, 1 torch thread, the warm-up batches first (untimed, so prefix
caches hold what they held), then each timed call in the recorded order. The
replay must generate exactly the tokens the engine did (checked).

Figures (tokens are the generator's generated tokens; the same tokens both ways,
so a ratio of times is the ratio of tokens per second):
- ``inprocess`` (headline): the engine calls both backends in this process, one
  at a time, so it is compared with the direct calls of both roles:
  ratio = (direct generate + direct score) / engine run, in CPU time of this
  process (1 torch thread, so CPU time is the work done, whatever else the shared
  box runs; wall time is printed too). What is missing to 1 is the engine's own
  work (scheduler, budget, strategies, results.jsonl; also printed on its own:
  the engine's CPU outside backend calls) and any slowdown of the calls
  themselves; on this box the calls' CPU time varies by about 10% from run to run,
  so the ratio is a median over repeats, each an engine run then its replay.
- ``ray``: one generator and one verifier actor. The generator's busy share (wall
  time inside its calls / engine wall), the CPU its calls took directly over in
  the actor, and tokens/s through the engine over the generator called directly
  (wall). On this shared 2-core box the two actors, the driver and other people's
  jobs compete for the CPUs, so the wall ratios there are lower bounds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, emit, median, parser, ray_runtime_env, say, timed_run
from _fakes import read_records

from ponder.engine.engine import Engine
from ponder.config import load_config
from ponder.tasks import game24

GOAL = 0.9
CONFIG = REPO / "configs" / "game24.yaml"
WARMUP_PUZZLES = 4
ROLES = ("generator", "verifier")


def config_for(mode: str, record_dir: Path, model_path: str | None):
    """configs/game24.yaml with recording backends in ``mode``, progress off."""
    data = yaml.safe_load(CONFIG.read_text())
    for name, cls in (("generator", "RecordingEmbeddedGenerator"),
                      ("verifier", "RecordingEmbeddedVerifier")):
        data[name].update(backend=f"benchmarks._fakes:{cls}", model_path=model_path,
                          kwargs={"record_path": str(record_dir / f"{name}.pkl")})
    data["ray"].update(mode=mode, num_cpus=2, runtime_env=ray_runtime_env())
    data["output"]["progress"] = "off"
    return load_config(data=data)


def replay(records: list, role: str, model_path: str | None, skip: int) -> dict:
    """Call a fresh backend with the recorded batches, in order; wall and thread-CPU seconds of
    the calls after the first ``skip`` (the warm-up's), and the tokens those calls generated."""
    import torch

    from ponder.actors.backends.embedded import EmbeddedGenerator, EmbeddedVerifier

    torch.set_num_threads(1)
    backend = (EmbeddedGenerator if role == "generator" else EmbeddedVerifier)(model_path=model_path)
    call = backend.generate if role == "generator" else backend.score
    out = {"wall_s": 0.0, "cpu_s": 0.0, "tokens": 0}
    for i, (*_, requests) in enumerate(records):
        wall, cpu = time.perf_counter(), time.thread_time()
        results = call(requests)
        if i >= skip:
            out["wall_s"] += time.perf_counter() - wall
            out["cpu_s"] += time.thread_time() - cpu
            out["tokens"] += sum(getattr(r, "num_generated_tokens", 0) for r in results)
    return out


def measure(mode: str, problems: list, model_path: str | None) -> dict:
    """One engine run in ``mode`` with recording backends, then the direct replay of its batches."""
    import torch

    torch.set_num_threads(1)  # the in-process engine's backends: as the replay and the actors
    with tempfile.TemporaryDirectory(prefix="ponder-bench-") as tmp:
        record_dir = Path(tmp)
        config = config_for(mode, record_dir, model_path)
        with Engine(config) as engine:
            timed_run(engine, game24.train_puzzles()[:WARMUP_PUZZLES])
            skip = {role: len(list(read_records(record_dir / f"{role}.pkl")))
                    for role in ROLES}
            run = timed_run(engine, problems)
        records = {role: list(read_records(record_dir / f"{role}.pkl")) for role in ROLES}
    r = {"engine_wall_s": run.wall_s, "engine_cpu_s": run.cpu_s, "engine_tokens": run.generated_tokens,
         "accuracy": run.summary["accuracy"]}
    for role in ROLES:
        timed = records[role][skip[role]:]
        r[role] = {"calls": len(timed), "requests": sum(len(req) for *_, req in timed),
                   "in_engine_wall_s": sum(wall for _, wall, _, _ in timed),
                   "in_engine_cpu_s": sum(cpu for _, _, cpu, _ in timed),
                   "direct": replay(records[role], role, model_path, skip[role])}
    gen, ver = r["generator"], r["verifier"]
    r["same_tokens"] = gen["direct"]["tokens"] == run.generated_tokens
    r["ratio_cpu"] = (gen["direct"]["cpu_s"] + ver["direct"]["cpu_s"]) / run.cpu_s
    r["ratio_wall"] = (gen["direct"]["wall_s"] + ver["direct"]["wall_s"]) / run.wall_s
    r["ratio_generator_wall"] = gen["direct"]["wall_s"] / run.wall_s
    # In process, the engine's CPU is its backend calls plus its own work; the latter is exact.
    r["own_cpu_share"] = 1 - (gen["in_engine_cpu_s"] + ver["in_engine_cpu_s"]) / run.cpu_s
    r["generator_busy"] = gen["in_engine_wall_s"] / run.wall_s
    r["generator_call_cpu_ratio"] = gen["direct"]["cpu_s"] / max(gen["in_engine_cpu_s"], 1e-9)
    return r


def report(mode: str, r: dict) -> None:
    say(f"{mode}: engine {r['engine_wall_s']:.1f} s wall (this process's CPU {r['engine_cpu_s']:.1f} s), "
        f"{r['engine_tokens']:,} generated tokens = {r['engine_tokens'] / r['engine_wall_s']:,.0f} "
        f"tokens/s; accuracy {r['accuracy']:.0%}")
    for role in ROLES:
        x = r[role]
        say(f"  {role}: {x['calls']} calls ({x['requests'] / max(x['calls'], 1):.1f} requests each); "
            f"inside the engine's calls {x['in_engine_wall_s']:.1f} s wall / {x['in_engine_cpu_s']:.1f} s "
            f"CPU; called directly {x['direct']['wall_s']:.1f} s wall / {x['direct']['cpu_s']:.1f} s CPU")
    say(f"  replay generated {r['generator']['direct']['tokens']:,} tokens "
        f"({'the same' if r['same_tokens'] else 'DIFFERENT'})")
    if mode == "inprocess":
        say(f"  direct / engine, both roles: CPU {r['ratio_cpu']:.3f}, wall {r['ratio_wall']:.3f}; "
            f"the engine's own work (outside backend calls): {r['own_cpu_share']:.2%} of its CPU")
    else:
        say(f"  generator busy {r['generator_busy']:.0%} of the engine's wall; its calls' CPU direct / "
            f"in the actor {r['generator_call_cpu_ratio']:.3f}; tokens/s through the engine / direct "
            f"generator alone (wall) {r['ratio_generator_wall']:.3f}, both roles {r['ratio_wall']:.3f}")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model-path", default=None, help="embedded weights dir (default: shipped)")
    p.add_argument("--modes", default="inprocess,ray", help="comma-separated: inprocess, ray")
    args = p.parse_args()
    problems = game24.puzzles_in_test_split()[: 16 if args.quick else None]
    repeats = args.repeats or (1 if args.quick else 3)
    modes = args.modes.split(",")
    say(f"{CONFIG.name} (beam) on {len(problems)} test puzzles, modes {modes}, {repeats} repeat(s)")
    results: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for mode in modes:
            results.setdefault(mode, []).append(measure(mode, problems, args.model_path))
            report(mode, results[mode][-1])
    figures = {}
    for mode, rows in results.items():
        keys = (("ratio_cpu", "ratio_wall", "own_cpu_share") if mode == "inprocess" else
                ("generator_busy", "generator_call_cpu_ratio", "ratio_generator_wall", "ratio_wall"))
        for key in keys:
            figures[f"{mode}_{key}"] = median([r[key] for r in rows])
        figures[f"{mode}_tokens_per_s"] = median([r["engine_tokens"] / r["engine_wall_s"] for r in rows])
        figures[f"{mode}_same_tokens"] = all(r["same_tokens"] for r in rows)
    headline = figures.get("inprocess_ratio_cpu", figures.get("ray_ratio_generator_wall"))
    say(f"headline (in-process, CPU time, both roles): {headline:.3f}, "
        f"{'meets' if headline >= GOAL else 'BELOW'} the goal of {GOAL}")
    emit("backend_efficiency", efficiency=headline, goal=GOAL, **figures,
         num_problems=len(problems), repeats=repeats, model_path=args.model_path, quick=args.quick)


if __name__ == "__main__":
    main()
