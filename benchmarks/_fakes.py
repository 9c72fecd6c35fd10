"""Scripted fakes for the engine benchmarks, and recording wrappers around the embedded backends.

None of these is a model. ``ScriptedLatencyGenerator`` / ``ScriptedLatencyVerifier``
are ``ponder.search.scripted``'s fakes (usually in instant mode) whose every batch
call takes a fixed wall time, computed from the batch alone, by sleeping the rest
of it after the fake's own (tiny) work:

    generate: batch_latency_s + sample_latency_s * (samples in the batch)
    score:    batch_latency_s + path_latency_s * (paths in the batch)

Sleeping, not computing, so that CPU is not what limits throughput: the benchmarks
that use them measure how well the engine keeps replicas busy (scale-out, overlap
of generator and verifier), not how fast this 2-core box computes.

The engine builds them on its actors from config names such as
``"benchmarks._fakes:ScriptedLatencyGenerator"`` (``ponder.actors.factory``), so this
module must be importable there: ``_common.ray_runtime_env`` puts the repository
root on the actors' PYTHONPATH.

``RecordingEmbeddedGenerator`` / ``RecordingEmbeddedVerifier`` are no fakes: they
are the real embedded backends plus a hook that appends every batch they are
called with (and the call's own duration) to a file, so a benchmark can replay
exactly the batches the engine sent (``read_records``).
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier
from ponder.tasks.base import Problem, Task


class ScriptedQATask(Task):
    """The task of scripted problems: prompt ``"Q<id>: <text>\\n"``, a step a line, ``Answer:`` last.

    Instant fakes ignore what the problem says, so a job of any size is just ids;
    other fakes know each problem by this prompt (``scripted_problems``).
    """

    name = "scripted_qa"
    max_steps = 16

    def prompt(self, problem: Problem) -> str:
        return f"Q{problem.problem_id}: {problem.problem}\n"

    is_terminal = ScriptedTask.is_terminal  # the scripted step grammar
    extract_answer = ScriptedTask.extract_answer

    def verify(self, problem: Problem, answer: str | None) -> bool | None:
        return None if problem.reference is None else answer == problem.reference


def instant_problems(num_problems: int) -> list[Problem]:
    """``num_problems`` problems for instant fakes (no reference answer)."""
    return [Problem(str(i), f"scripted problem {i}") for i in range(num_problems)]


def scripted_problems(num_problems: int, min_steps: int, max_steps: int,
                      p_correct: float = 0.6) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Problems whose solutions take ``min_steps``..``max_steps`` steps (cycling through them).

    Returns:
        The problems (reference = the scripted answer) and, for the fakes' ``problems``
        kwarg, each one's ``ScriptedProblem`` fields as plain data.
    """
    task, problems, specs = ScriptedQATask(), [], []
    for i in range(num_problems):
        problem = Problem(str(i), f"scripted problem {i}", reference=str(100 + i))
        problems.append(problem)
        specs.append({"prompt": task.prompt(problem), "answer": problem.reference,
                      "num_steps": min_steps + i % (max_steps - min_steps + 1),
                      "p_correct": p_correct})
    return problems, specs


def _problems(specs: Sequence[Any]) -> list[ScriptedProblem]:
    # Config kwargs stay plain data (they are written to config.yaml): dicts become problems here.
    return [s if isinstance(s, ScriptedProblem) else ScriptedProblem(**s) for s in specs]


def _sleep_until(start: float, latency_s: float) -> None:
    left = latency_s - (time.perf_counter() - start)
    if left > 0:
        time.sleep(left)


class ScriptedLatencyGenerator(ScriptedGenerator):
    """A scripted generator whose call on a batch takes a fixed time (see the module docstring).

    Args:
        batch_latency_s: seconds every call takes at least.
        sample_latency_s: seconds added per sample (``n`` of every request).
        problems: ScriptedProblems, or dicts of their fields (ignored in instant mode).
        kwargs: the rest of ``ScriptedGenerator``'s (``seed``, ``instant_steps``, ...).
    """

    def __init__(self, batch_latency_s: float = 0.0, sample_latency_s: float = 0.0,
                 problems: Sequence[Any] = (), **kwargs: Any):
        super().__init__(_problems(problems), **kwargs)
        self.batch_latency_s = batch_latency_s
        self.sample_latency_s = sample_latency_s

    def latency_s(self, requests: Sequence[GenerateRequest]) -> float:
        """How long a call on ``requests`` takes."""
        return self.batch_latency_s + self.sample_latency_s * sum(r.n for r in requests)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        start = time.perf_counter()
        results = super().generate(requests)
        _sleep_until(start, self.latency_s(requests))
        return results


class ScriptedLatencyVerifier(ScriptedVerifier):
    """A scripted verifier whose call on a batch takes a fixed time (see the module docstring).

    Args:
        batch_latency_s: seconds every call takes at least.
        path_latency_s: seconds added per scored path.
        problems: ScriptedProblems, or dicts of their fields (ignored in instant mode).
        kwargs: the rest of ``ScriptedVerifier``'s (``seed``, ``instant``, ...).
    """

    def __init__(self, batch_latency_s: float = 0.0, path_latency_s: float = 0.0,
                 problems: Sequence[Any] = (), **kwargs: Any):
        super().__init__(_problems(problems), **kwargs)
        self.batch_latency_s = batch_latency_s
        self.path_latency_s = path_latency_s

    def latency_s(self, requests: Sequence[ScoreRequest]) -> float:
        """How long a call on ``requests`` takes."""
        return self.batch_latency_s + self.path_latency_s * sum(len(r.paths) for r in requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        start = time.perf_counter()
        results = super().score(requests)
        _sleep_until(start, self.latency_s(requests))
        return results


# -- recording the batches the engine sends ------------------------------------------------

class _Recorder:
    """Appends ``(role, wall s, thread CPU s, requests)`` per call to ``path``, flushed at once."""

    def __init__(self, path: str | Path, role: str):
        self._file = open(path, "ab")  # closed when the actor process ends
        self._role = role

    def record(self, wall_s: float, cpu_s: float, requests: list) -> None:
        pickle.dump((self._role, wall_s, cpu_s, requests), self._file)
        self._file.flush()


def read_records(path: str | Path) -> Iterator[tuple[str, float, float, list]]:
    """The ``(role, wall s, thread CPU s, requests)`` of every call recorded in ``path``, in order."""
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def _embedded():
    from ponder.actors.backends import embedded  # torch, only where a recorder is built

    return embedded


class RecordingEmbeddedGenerator:
    """``EmbeddedGenerator`` that records each batch it serves (see the module docstring).

    Args:
        record_path: the file calls are appended to.
        kwargs: ``EmbeddedGenerator``'s (``model_path``, ...).
    """

    def __init__(self, record_path: str, **kwargs: Any):
        self.backend = _embedded().EmbeddedGenerator(**kwargs)
        self._recorder = _Recorder(record_path, "generator")

    def model_spec(self):
        return self.backend.model_spec()

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        wall, cpu = time.perf_counter(), time.thread_time()  # torch runs on this thread (1 thread)
        results = self.backend.generate(requests)
        self._recorder.record(time.perf_counter() - wall, time.thread_time() - cpu, requests)
        return results


class RecordingEmbeddedVerifier:
    """``EmbeddedVerifier`` that records each batch it serves (see the module docstring).

    Args:
        record_path: the file calls are appended to.
        kwargs: ``EmbeddedVerifier``'s (``model_path``, ...).
    """

    def __init__(self, record_path: str, **kwargs: Any):
        self.backend = _embedded().EmbeddedVerifier(**kwargs)
        self._recorder = _Recorder(record_path, "verifier")

    def model_spec(self):
        return self.backend.model_spec()

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        wall, cpu = time.perf_counter(), time.thread_time()  # torch runs on this thread (1 thread)
        results = self.backend.score(requests)
        self._recorder.record(time.perf_counter() - wall, time.thread_time() - cpu, requests)
        return results
