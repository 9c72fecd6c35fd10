"""Shared test helpers: the scripted task and job, and the local Ray / simulated-cluster fixtures.

Test files import the helpers with ``from conftest import ...`` (pytest puts tests/ on
sys.path); Ray actors find ``conftest:ScriptedQATask`` and ``test_fault:SlowScripted*``
through the PYTHONPATH that ``TESTS_RUNTIME_ENV`` gives them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ponder.config import load_config
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedVerifier
from ponder.tasks.base import Problem, Task

TESTS_DIR = str(Path(__file__).resolve().parent)
TESTS_PYTHONPATH = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
TESTS_RUNTIME_ENV = {"env_vars": {"PYTHONPATH": TESTS_PYTHONPATH}}  # actors import test modules
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                      "health_check_initial_delay_ms": 1000}  # notice a lost node in seconds


class ScriptedQATask(Task):
    """A task over scripted problems: the prompt names the question, the answer is checked exactly."""

    name = "scripted_qa"
    max_steps = 8

    def prompt(self, problem: Problem) -> str:
        return f"Q{problem.problem_id}: {problem.problem}\n"

    def is_terminal(self, step: str) -> bool:
        return step.startswith("Answer:")

    def extract_answer(self, steps: list[str]) -> str | None:
        return steps[-1][len("Answer:"):].strip() if steps and self.is_terminal(steps[-1]) else None

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        return answer == problem.reference


def scripted_problems(task: Task, num_problems: int, p_correct: float | tuple[float, ...] = 0.7
                      ) -> tuple[list[Problem], list[ScriptedProblem]]:
    """Problems ``"question i"`` (reference ``40 + i``) and the scripted problems behind them.

    ``p_correct``: one step-correctness for all, or a tuple cycled over the problems.
    """
    rates = p_correct if isinstance(p_correct, tuple) else (p_correct,)
    problems = [Problem(str(i), f"question {i}", reference=str(40 + i)) for i in range(num_problems)]
    scripted = [ScriptedProblem(prompt=task.prompt(p), answer=p.reference, p_correct=rates[i % len(rates)])
                for i, p in enumerate(problems)]
    return problems, scripted


def scripted_job(num_problems: int = 6, p_correct: float = 0.7):
    """Problems, the task, and scripted backends that know those problems."""
    task = ScriptedQATask()
    problems, scripted = scripted_problems(task, num_problems, p_correct)
    return task, problems, ScriptedGenerator(scripted, seed=1), ScriptedVerifier(scripted, seed=1)


def inprocess_config(strategy: str = "beam", params: dict | None = None, **budget):
    """A Config for ``run_inprocess`` on the scripted backends: small batches, seed 3."""
    data = {"search": {"strategy": strategy, "params": params or {}, "seed": 3},
            "budget": budget, "ray": {"mode": "inprocess"},
            "engine": {"max_batch_requests": 4, "max_in_flight_batches": 1},
            "generator": {"backend": "scripted"}, "verifier": {"backend": "scripted"}}
    return load_config(data=data)


SMALL_PARAMS = {  # strategy -> params small enough for a fast test
    "beam": {"beam_width": 2, "expansion_factor": 2},
    "best_of_n": {"n": 4},
    "dvts": {"num_samples": 4, "beam_width": 2},
    "mcts": {"num_simulations": 8, "num_parallel": 2},
    "rebase": {"width": 4},
    "compute_optimal": {"num_probe_samples": 4, "fixed_num_samples": 4, "max_num_samples": 8},
}


# -- Ray ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_runtime(request):
    """A local Ray for the module (2 CPUs); actors import tests/ modules through PYTHONPATH.

    A module sets ``RAY_NAMESPACE`` to connect in that namespace.
    """
    from ponder.cluster.runtime import connect  # Ray: only the modules that use this fixture

    runtime = connect(num_cpus=2, log_to_driver=False, runtime_env=TESTS_RUNTIME_ENV,
                      namespace=getattr(request.module, "RAY_NAMESPACE", None))
    yield runtime
    runtime.shutdown()
    if runtime.owns_temp_dir:
        assert not os.path.exists(runtime.temp_dir)  # a local Ray leaves nothing behind


@pytest.fixture(scope="module")
def make_cluster():
    """``make_cluster(head_args, nodes=())``: a simulated multi-node Ray (``ray.cluster_utils.Cluster``)
    connected for the module, in a private RAY_TMPDIR; all of it is torn down after the module."""
    from ponder.cluster.runtime import connect  # Ray: only the modules that use this fixture
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ponder-cl-", dir="/tmp")
    old_tmp = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # Cluster writes its address file there: keep it private
    made: list[tuple[Any, Any]] = []  # (cluster, runtime)

    def make(head_args: dict[str, Any], nodes: tuple[dict[str, Any], ...] = ()) -> Cluster:
        sim = Cluster(initialize_head=True, head_node_args=head_args)
        for node_args in nodes:
            sim.add_node(**node_args)
        made.append((sim, connect(address=sim.address, log_to_driver=False,
                                  runtime_env=TESTS_RUNTIME_ENV)))
        return sim

    yield make
    for sim, runtime in made:
        runtime.shutdown()
        sim.shutdown()
    if old_tmp is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old_tmp
    shutil.rmtree(temp, ignore_errors=True)
