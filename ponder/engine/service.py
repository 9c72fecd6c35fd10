"""The persistent engine: one set of model replicas serving many search jobs, submitted over time.

``EngineService`` holds the replica pools and a ``JobRunner`` per job, and runs
the engine loop in a background thread: every job's scheduler is stepped
against the same pools, each result goes to the job that asked for it, and
each job keeps its own FLOP ledger, checkpoint and run directory under
``state_dir/jobs/<job id>/``. A service started again on the same state dir
(after a crash, or Ray restarting its actor) resumes every unfinished job
from its checkpoint.

``ponder serve`` runs it as a named, detached Ray actor (namespace ``ponder``,
name ``ponder-engine``) and ``PonderClient`` (``ponder submit / status / result /
cancel``) talks to it. A local Ray started by ``ponder serve`` listens only on
127.0.0.1, requires Ray's token and has no dashboard; the service itself opens
no port (``ponder.cluster.auth``).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from ponder.engine.checkpoint import RequestIds
from ponder.engine.jobs import JobRunner
from ponder.engine.loop import deliver, dispatch
from ponder.engine.metrics import NO_METRICS, JobMetrics
from ponder.engine.pools import model_specs
from ponder.engine.rundir import RunDir
from ponder.tasks import task_from_config
from ponder.tasks.base import Problem

NAMESPACE = "ponder"
ACTOR_NAME = "ponder-engine"
SERVE_FILE = "serve.json"  # in the state dir: how clients find the engine
JOB_FILE = "job.json"  # in a job's dir: what was submitted, and its state
COLLECT_TIMEOUT_S = 0.2
STATES = ("running", "done", "cancelled", "failed")


class JobNotFound(KeyError):
    """No job with that id; the message lists the known ones."""


class EngineService:
    """Many jobs on one set of pools, stepped by a background thread.

    Args:
        config: the base Config (models, default search and budget).
        state_dir: where jobs live; unfinished ones found there are resumed.
        pools: the replica pools (``build_ray_pools``/``InProcessPools``); owned and
            shut down by ``stop``.
        task: the task object (default: the config's).
        checkpoint_every_s: each job's checkpoint cadence.
        autostart: start the loop thread now.
        metrics: what the loop reports every job and the pools to (``ponder serve``: Ray
            metrics, ``ponder.cluster.metrics``); default: nothing.
    """

    def __init__(self, config: Any, state_dir: str | Path, pools: Any, task: Any = None,
                 checkpoint_every_s: float = 30.0, autostart: bool = True,
                 metrics: JobMetrics = NO_METRICS):
        self.config = config
        self.task = task if task is not None else task_from_config(config.task)
        self.state_dir = Path(state_dir)
        (self.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.pools = pools
        self.checkpoint_every_s = checkpoint_every_s
        self.specs = model_specs(pools)
        self.request_ids = RequestIds()
        self.jobs: dict[str, dict[str, Any]] = {}  # job_id -> its job.json content
        self.runners: dict[str, JobRunner] = {}  # job_id -> runner of a running job
        self.last_error: str | None = None
        self.metrics = metrics
        self._turn = 0  # loop steps, to rotate which job schedules first
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_jobs()
        if autostart:
            self.start()

    # -- jobs on disk -------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    def _save_job(self, job: dict[str, Any]) -> None:
        path = self._job_dir(job["job_id"]) / JOB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{JOB_FILE}.tmp")
        tmp.write_text(json.dumps(job) + "\n")
        tmp.replace(path)

    def _load_jobs(self) -> None:
        for path in sorted((self.state_dir / "jobs").glob(f"*/{JOB_FILE}")):
            try:
                job = json.loads(path.read_text())
                missing = {"job_id", "state", "problems"} - set(job)
                if missing:
                    raise KeyError(f"no {', '.join(sorted(missing))}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                # One unreadable job must not keep the engine (and every other job) down.
                self.last_error = f"{path}: not a job file, skipped ({type(e).__name__}: {e})"
                continue
            self.jobs[job["job_id"]] = job
            if job["state"] == "running":
                try:
                    self.runners[job["job_id"]] = self._runner(job, resume=True)
                except Exception as e:  # noqa: BLE001 -- one bad job must not stop the others
                    self._end(job, "failed", error=f"cannot resume: {e}")

    def _runner(self, job: dict[str, Any], resume: bool) -> JobRunner:
        config = copy.deepcopy(self.config)
        config.search.strategy = job.get("strategy") or config.search.strategy
        if job.get("params") is not None:
            config.search.params = dict(job["params"])
        for key in ("flops_total", "flops_per_problem"):  # a pinned job's None is "no cap"
            if job.get(key) is not None or job.get("pinned"):
                setattr(config.budget, key, None if job.get(key) is None else int(job[key]))
        problems = [Problem(str(p[0]), p[1], p[2]) for p in job["problems"]]
        runner = JobRunner(config, self.task, problems, self.specs, self._job_dir(job["job_id"]),
                           request_ids=self.request_ids, resume=resume,
                           checkpoint_every_s=self.checkpoint_every_s)
        self.metrics.job_started(runner)
        return runner

    # -- the API ------------------------------------------------------------------------

    def submit(self, problems: Sequence[Problem | dict | Sequence], flops_total: int | None = None,
               flops_per_problem: int | None = None, strategy: str | None = None,
               params: dict[str, Any] | None = None) -> str:
        """Start a job; returns its id.

        Args:
            problems: Problems, ``{"id", "problem", "reference"}`` dicts or
                ``(id, problem, reference)`` triples.
            flops_total: the job's FLOP cap (default: the config's ``budget.flops_total``).
            flops_per_problem: each problem's cap (default: the config's).
            strategy, params: the search (default: the config's).

        Raises:
            ValueError: no problems, duplicate ids, unknown strategy or bad parameters.
        """
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job = {"job_id": job_id, "state": "running", "submitted_at": time.time(),
               "problems": [_triple(p) for p in problems], "strategy": strategy,
               "params": params, "flops_total": flops_total, "flops_per_problem": flops_per_problem,
               "error": None}
        if not job["problems"]:
            raise ValueError("a job needs at least one problem")
        with self._lock:
            runner = self._runner(job, resume=False)  # raises before anything is saved
            # Pin the search and caps the job runs with: a restart under another config keeps them.
            search, budget = runner.config.search, runner.config.budget
            job.update(strategy=search.strategy, params=dict(search.params), pinned=True,
                       flops_total=budget.flops_total, flops_per_problem=budget.flops_per_problem)
            self._save_job(job)
            self.jobs[job_id] = job
            self.runners[job_id] = runner
        self._wake.set()
        return job_id

    def status(self, job_id: str | None = None) -> dict[str, Any]:
        """One job's progress, FLOPs and best answer so far per problem; or every job's progress.

        Raises:
            JobNotFound: unknown ``job_id``.
        """
        with self._lock:
            if job_id is None:
                return {"jobs": [self._brief(j) for j in self.jobs], "last_error": self.last_error}
            job = self._job(job_id)
            runner = self.runners.get(job_id)
            if runner is not None:
                return {**self._brief(job_id), **runner.status(best=True)}
            return {**self._brief(job_id), **self._finished_status(job)}

    def result(self, job_id: str) -> dict[str, Any] | None:
        """The finished job's summary and result records; None while it runs.

        Raises:
            JobNotFound: unknown ``job_id``.
        """
        with self._lock:
            job = self._job(job_id)
            if job["state"] == "running":
                return None
            run_dir = RunDir(self._job_dir(job_id))
            return {"job_id": job_id, "state": job["state"], "error": job.get("error"),
                    "summary": run_dir.read_summary(), "results": run_dir.read_results()}

    def cancel(self, job_id: str) -> bool:
        """Stop a running job, releasing its reservations; finished problems keep their results.

        Returns:
            True if the job was running.

        Raises:
            JobNotFound: unknown ``job_id``.
        """
        with self._lock:
            self._job(job_id)  # raises JobNotFound
            runner = self.runners.get(job_id)
            if runner is None:
                return False
            runner.cancel()
            self._close(job_id, "cancelled")
            return True

    def ping(self) -> dict[str, Any]:
        """Liveness and what the service runs."""
        return {"ok": True, "task": getattr(self.task, "name", ""), "state_dir": str(self.state_dir),
                "strategy": self.config.search.strategy, "num_running": len(self.runners)}

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            known = ", ".join(sorted(self.jobs)[-10:]) or "none"
            raise JobNotFound(f"no job {job_id!r}; known jobs: {known}")
        return job

    def _brief(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        runner = self.runners.get(job_id)
        out = {"job_id": job_id, "state": job["state"], "num_problems": len(job["problems"]),
               "error": job.get("error")}
        if runner is not None:
            out.update(num_finished=runner.num_finished, flops_spent=runner.budget.job_spent)
        else:
            out.update(num_finished=job.get("num_finished"), flops_spent=job.get("flops_spent"))
        return out

    def _finished_status(self, job: dict[str, Any]) -> dict[str, Any]:
        records = RunDir(self._job_dir(job["job_id"])).read_results()
        best = {r["id"]: {k: r[k] for k in ("answer", "score", "correct", "stop_reason", "flops")}
                for r in records}
        return {"num_finished": len(records), "flops_spent": sum(r["flops"] for r in records),
                "best": best}

    # -- the loop -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="ponder-engine-loop", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 -- the service outlives one bad step
                self.last_error = f"{type(e).__name__}: {e}"
                time.sleep(0.5)

    def _step(self) -> None:
        with self._lock:
            runners = list(self.runners.items())
            self._turn += 1
            for job_id, runner in runners[self._turn % max(len(runners), 1):] + runners[
                    :self._turn % max(len(runners), 1)]:  # rotate, so no job starves the others
                try:
                    dispatch([runner], self.pools)
                except ValueError as e:  # this job cannot run (e.g. no verifier for its strategy)
                    runner.cancel()
                    self._close(job_id, "failed", error=str(e))
            busy = any(pool.num_in_flight for pool in self.pools.all())
        if not runners:
            self._wake.wait(1.0)
            self._wake.clear()
            return
        results = self.pools.collect(COLLECT_TIMEOUT_S) if busy else []
        with self._lock:
            runners = [r for r in self.runners.values()]
            deliver(runners, self.pools, results)
            self.metrics.tick(runners, self.pools)
            for job_id, runner in list(self.runners.items()):
                if not runner.has_work:
                    self._close(job_id, "cancelled" if runner.cancelled else "done")

    def _close(self, job_id: str, state: str, error: str | None = None) -> None:
        runner = self.runners.pop(job_id)
        job = self.jobs[job_id]
        runner.close(runner.summary(time.time() - job["submitted_at"], len(job["problems"])))
        self.metrics.job_ended(runner, self.pools)
        self._end(job, state, num_finished=runner.num_finished, flops_spent=runner.budget.job_spent,
                  error=error)

    def _end(self, job: dict[str, Any], state: str, **fields: Any) -> None:
        job.update(state=state, ended_at=time.time(), **fields)
        self._save_job(job)

    def stop(self, checkpoint: bool = True) -> None:
        """Stop the loop, checkpoint every running job (they resume on the next start), shut pools down."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if checkpoint:
                for runner in self.runners.values():
                    runner.checkpoint()
            self.pools.shutdown()


def _triple(problem: Problem | dict | Sequence) -> list:
    if isinstance(problem, Problem):
        return [problem.problem_id, problem.problem, problem.reference]
    if isinstance(problem, dict):
        return [str(problem["id"]), str(problem["problem"]), problem.get("reference")]
    problem_id, text, *rest = problem
    return [str(problem_id), str(text), rest[0] if rest else None]
