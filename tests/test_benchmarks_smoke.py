"""Smoke tests of the engine benchmarks (benchmarks/): tiny sizes, in process, no Ray, a few seconds.

They check what the figures rest on: the latency fakes take the time they promise
and answer what the plain scripted fakes answer; the lockstep loop of
async_vs_lockstep does exactly the engine's search work; engine_overhead's command
ends with its one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks import their helpers as top-level

from _common import run_once, timed_run  # noqa: E402
from _fakes import (ScriptedLatencyGenerator, ScriptedLatencyVerifier, ScriptedQATask,  # noqa: E402
                    instant_problems, scripted_problems)

from ponder.engine.engine import Engine  # noqa: E402
from ponder.engine.inprocess import InProcessPool, InProcessPools  # noqa: E402
from ponder.search.messages import GenerateRequest, ScoreRequest  # noqa: E402
from ponder.search.scripted import ScriptedGenerator, ScriptedVerifier  # noqa: E402


def test_latency_fakes_take_their_time_and_answer_like_the_scripted_fakes():
    gen = ScriptedLatencyGenerator(batch_latency_s=0.03, sample_latency_s=0.01, instant_steps=3)
    requests = [GenerateRequest(i, f"Q{i}: x\n", n=2, seed=i) for i in range(3)]
    start = time.perf_counter()
    results = gen.generate(requests)
    assert time.perf_counter() - start >= 0.03 + 0.01 * 6
    assert results == ScriptedGenerator(instant_steps=3).generate(requests)

    ver = ScriptedLatencyVerifier(batch_latency_s=0.02, path_latency_s=0.01, instant=True)
    score = [ScoreRequest(7, "Q: x\n", [["a"], ["b", "c"]])]
    start = time.perf_counter()
    assert ver.score(score) == ScriptedVerifier(instant=True).score(score)
    assert time.perf_counter() - start >= 0.02 + 0.01 * 2


def test_lockstep_loop_does_the_engines_search_work():
    import async_vs_lockstep as bench

    problems, specs = scripted_problems(6, 2, 4)
    config = bench.config_for(specs)
    gen = ScriptedLatencyGenerator(problems=specs, seed=1)
    ver = ScriptedLatencyVerifier(problems=specs, seed=1)
    pools = InProcessPools(InProcessPool(gen, "generator"), InProcessPool(ver, "verifier"))
    with Engine(config, ScriptedQATask(), pools=pools) as engine:
        run = timed_run(engine, problems)
        _, answers = bench.lockstep(engine, problems)
    assert len(answers) == len(problems)
    assert run.num_expansions > len(problems)
    assert bench.same_work(run.lines, answers) == 0
    # ...and it notices when the work differs.
    run.lines[0] = dict(run.lines[0], num_nodes=run.lines[0]["num_nodes"] + 1)
    assert bench.same_work(run.lines, answers) == 1


def test_engine_grows_every_instant_tree_to_its_full_size():
    import engine_overhead as bench

    run = run_once(bench.config_for("inprocess"), ScriptedQATask(), instant_problems(12))
    per_tree = bench.BEAM["beam_width"] * bench.BEAM["expansion_factor"] * bench.INSTANT_STEPS
    assert run.num_expansions == 12 * per_tree


@pytest.mark.slow
def test_engine_overhead_command_ends_with_its_json_line():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "engine_overhead.py"), "--quick",
         "--problems", "30", "--modes", "inprocess", "--repeats", "1"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    line = json.loads(out.strip().splitlines()[-1])
    assert line["benchmark"] == "engine_overhead"
    assert line["expansions_per_s_inprocess"] > 0
    assert line["expansions_per_job"] == 30 * 64
