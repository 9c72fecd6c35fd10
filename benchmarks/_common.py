"""What the engine benchmarks share: command line, configs, timed engine runs, the JSON line.

Every benchmark is one command, ``python benchmarks/NAME.py [--quick]``, prints
its figures and ends with exactly one JSON line holding its headline ratio
(``emit``). Importing this module puts the repository root on ``sys.path``, so
``benchmarks._fakes`` imports in the driver; ``ray_runtime_env`` does the same
for Ray actors, which build the fakes from ``"benchmarks._fakes:Class"`` names.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/, not the repo, first
    sys.path.insert(0, str(REPO))

from ponder.engine.engine import Engine  # noqa: E402  (after the path fix above)
from ponder.engine.rundir import read_results  # noqa: E402
from ponder.config import Config, load_config  # noqa: E402
from ponder.tasks.base import Problem, Task  # noqa: E402

FAKES = "benchmarks._fakes"  # module of the scripted fakes, importable in the driver and in actors


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (about a minute) and ``--repeats``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    p.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    return p


def emit(benchmark: str, **figures: Any) -> dict[str, Any]:
    """Print the final JSON line: ``{"benchmark": ..., headline..., machine...}``; return it."""
    line = _rounded({"benchmark": benchmark, **figures, "machine": machine()})
    sys.stdout.flush()
    print(json.dumps(line, default=str), flush=True)
    return line


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def machine() -> dict[str, Any]:
    """Where and when a figure was measured: CPUs, load, versions, commit, date."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "ray": ray_version, "commit": commit,
            "date": datetime.date.today().isoformat()}


def median(values: Sequence[float]) -> float:
    """The median (of repeats)."""
    return statistics.median(values)


def say(*parts: Any) -> None:
    """A progress / figure line on stdout, flushed (the JSON line stays last)."""
    print(*parts, flush=True)


# -- configs ----------------------------------------------------------------------------

def ray_runtime_env() -> dict[str, Any]:
    """Runtime env so actors import ``benchmarks._fakes`` and stay quiet about deprecations."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path, "PYTHONWARNINGS": "ignore::DeprecationWarning"}}


def role(backend: str, kwargs: dict[str, Any] | None = None, num_replicas: int = 1,
         num_cpus: float = 1.0) -> dict[str, Any]:
    """One ``generator`` / ``verifier`` config section."""
    return {"backend": backend, "kwargs": dict(kwargs or {}), "num_replicas": num_replicas,
            "num_cpus": num_cpus}


def make_config(strategy: str, params: dict[str, Any], generator: dict[str, Any],
                verifier: dict[str, Any] | None, mode: str = "inprocess",
                engine: dict[str, Any] | None = None, ray_num_cpus: int | None = None,
                budget: dict[str, Any] | None = None, seed: int = 0,
                task: str = "game24") -> Config:
    """A validated Config for one benchmark job (progress off; Ray with ``ray_runtime_env``).

    Args:
        strategy, params: ``search.strategy`` and ``search.params``.
        generator, verifier: role sections (``role``); verifier None for none.
        mode: ``"inprocess"`` or ``"ray"``.
        engine: ``engine`` section overrides.
        ray_num_cpus: logical CPUs of the local Ray (to fit many fractional replicas).
        budget: ``budget`` section.
        seed: ``search.seed``.
        task: ``task.name`` (the benchmarks pass their own task object to the Engine).
    """
    data = {"search": {"strategy": strategy, "params": params, "seed": seed},
            "generator": generator, "verifier": verifier,
            "engine": dict(engine or {}), "budget": dict(budget or {}),
            "ray": {"mode": mode, "num_cpus": ray_num_cpus, "runtime_env": ray_runtime_env()},
            "output": {"progress": "off"}, "task": {"name": task}}
    return load_config(data=data)


@contextmanager
def ray_session(num_cpus: int) -> Iterator[Any]:
    """A local Ray for several engines in turn (actors' logs not echoed); shut down after."""
    from ponder.cluster.runtime import connect

    runtime = connect(num_cpus=num_cpus, runtime_env=ray_runtime_env(), log_to_driver=False)
    try:
        yield runtime
    finally:
        runtime.shutdown()


@contextmanager
def ray_engine(config: Config, task: Task) -> Iterator[Engine]:
    """An Engine on the Ray pools ``config`` names, in the Ray this process already joined.

    Pools are built now (``engine.setup_seconds`` says how long) and shut down after.
    """
    from ponder.cluster.pools import build_ray_pools

    start = time.monotonic()
    pools = build_ray_pools(config, connect_ray=False)
    try:
        engine = Engine(config, task, pools=pools)
        engine.setup_seconds = time.monotonic() - start
        yield engine
    finally:
        pools.shutdown()


def busy_seconds(pool: Any) -> list[float]:
    """Seconds each live replica of a Ray pool has spent inside backend calls so far."""
    return [info.busy_s for info in pool.replica_info()]


# -- timed runs -------------------------------------------------------------------------

class GcPauses:
    """Records this process's garbage collections while active: ``with GcPauses() as pauses:``."""

    def __init__(self):
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds) per collection
        self._start = 0.0

    def __enter__(self) -> "GcPauses":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def full(self) -> list[float]:
        """Seconds of each full (oldest-generation) collection."""
        return [s for generation, s in self.pauses if generation == 2]


@dataclass
class Run:
    """One timed ``Engine.run``: wall and driver CPU seconds, the summary and per-problem lines."""

    wall_s: float
    cpu_s: float  # CPU time of this (driver) process during the run
    summary: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)
    gc_full_s: list[float] = field(default_factory=list)  # the driver's full collections, seconds each

    @property
    def num_expansions(self) -> int:
        """Nodes the trees grew (every node but the roots): one per sample the search kept."""
        return sum(line["num_nodes"] for line in self.lines) - len(self.lines)

    @property
    def cpu_us_per_expansion(self) -> float:
        """Driver CPU microseconds per node expansion."""
        return 1e6 * self.cpu_s / max(self.num_expansions, 1)

    @property
    def generated_tokens(self) -> int:
        return self.summary["tokens"]["generator"]["generated"]


def timed_run(engine: Engine, problems: Sequence[Problem], profile: Any = None) -> Run:
    """Run ``problems`` on an engine whose pools are already built; time only the job.

    Args:
        engine: an Engine; its pools are built first (Ray and actor start-up is not timed).
        problems: the job.
        profile: a ``cProfile.Profile`` to enable around the job, or None.
    """
    engine.pools()
    with tempfile.TemporaryDirectory(prefix="ponder-bench-") as out:
        wall, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        try:
            with GcPauses() as pauses:
                summary = engine.run(problems, out, progress=False)
        finally:
            if profile is not None:
                profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        lines = read_results(out)
    if summary["num_problems"] != len(problems):
        raise RuntimeError(f"the engine finished {summary['num_problems']} of {len(problems)} problems")
    return Run(wall, cpu, summary, lines, pauses.full())


def run_once(config: Config, task: Task, problems: Sequence[Problem], **engine_kwargs: Any) -> Run:
    """Build an Engine for ``config``, run ``problems`` once (timed), close it."""
    with Engine(config, task, **engine_kwargs) as engine:
        return timed_run(engine, problems)


def top_profile(profile: Any, limit: int = 15) -> list[str]:
    """The ``limit`` functions with the most own time, as printable lines."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(limit)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return [line for line in lines[start:] if line.strip()]
