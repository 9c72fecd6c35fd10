"""``ponder serve`` and its clients: the engine as a named, detached Ray actor, and ``PonderClient``.

    ponder serve --config configs/game24.yaml --state-dir ~/.ponder/serve   # blocks; Ctrl-C stops
    ponder submit puzzles.jsonl --budget 1e14 --strategy mcts             # prints the job id
    ponder status [JOB]     ponder result JOB     ponder cancel JOB

From Python::

    client = PonderClient()                 # finds the engine through the state dir's serve.json
    job_id = client.submit(problems, flops_total=1e14)
    client.status(job_id)["best"]           # best answer so far, per problem
    client.result(job_id, wait=True)

Without ``--address`` ``ponder serve`` starts a local Ray and keeps it alive in
the foreground; clients on the same machine join it through 127.0.0.1. The
engine opens no port of its own; Ray's ports (which Ray binds on every
interface) require Ray's auth token (``RAY_AUTH_MODE=token``, the token in
``~/.ray/auth_token``), and there is no dashboard and no Ray client server. With ``--address`` it places
the actor on that cluster and returns: the actor is detached and outlives it.
The actor restarts if its process dies (``max_restarts=-1``) and resumes every
unfinished job from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ponder.cluster.serve import ACTOR_NAME, NAMESPACE, SERVE_FILE, EngineService

DEFAULT_STATE_DIR = Path("~/.ponder/serve")
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's switch for token authentication


class EngineActorBody:
    """What runs inside the Ray actor: an EngineService on Ray replica pools."""

    def __init__(self, config: Any, state_dir: str, checkpoint_every_s: float):
        from ponder.cluster.engine import build_ray_pools

        pools = build_ray_pools(config, connect_ray=False)
        self.service = EngineService(config, state_dir, pools, checkpoint_every_s=checkpoint_every_s)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in ("submit", "status", "result", "cancel", "ping", "stop"):
            raise ValueError(f"unknown engine method {method!r}")
        return getattr(self.service, method)(*args, **kwargs)


def start_actor(config: Any, state_dir: str | Path, checkpoint_every_s: float = 30.0) -> Any:
    """Create (or find) the detached engine actor on the connected Ray; returns its handle.

    Raises:
        RuntimeError: the engine failed to start (its error in the message).
    """
    import ray

    actor_cls = ray.remote(EngineActorBody)
    handle = actor_cls.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=0, max_concurrency=16, num_cpus=0,
    ).remote(config, str(Path(state_dir).expanduser().resolve()), checkpoint_every_s)
    _unwrap(lambda: ray.get(handle.call.remote("ping"), timeout=600))
    return handle


def _unwrap(fn):
    """Run ``fn``; re-raise an actor's exception as itself rather than a RayTaskError."""
    from ray.exceptions import RayTaskError

    try:
        return fn()
    except RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


class PonderClient:
    """Talks to the engine started by ``ponder serve``.

    Args:
        address: the Ray cluster (default: the state dir's ``serve.json``, else
            ``RAY_ADDRESS``, else ``"auto"``). Ignored if Ray is already connected.
        state_dir: where ``ponder serve`` keeps its state (default ``~/.ponder/serve``).
        restart_wait_s: how long a call waits for an engine that Ray is restarting.

    Raises:
        RuntimeError: no engine is running there.
    """

    def __init__(self, address: str | None = None, state_dir: str | Path | None = None,
                 restart_wait_s: float = 300.0):
        served = _served(state_dir)
        if served.get("auth_mode") and AUTH_MODE_ENV not in os.environ:
            # Before Ray is imported: it reads the mode once. The token is ~/.ray/auth_token.
            os.environ[AUTH_MODE_ENV] = served["auth_mode"]
        import ray

        self.restart_wait_s = restart_wait_s
        if not ray.is_initialized():
            address = address or served.get("address") or os.environ.get("RAY_ADDRESS") or "auto"
            ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR",
                     log_to_driver=False)
        try:
            self.actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        except ValueError:
            raise RuntimeError(f"no ponder engine is running (no actor {ACTOR_NAME!r} in namespace "
                               f"{NAMESPACE!r}); start one with `ponder serve`") from None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + self.restart_wait_s
        while True:
            try:
                return _unwrap(lambda: ray.get(self.actor.call.remote(method, *args, **kwargs)))
            except ActorUnavailableError:
                # The engine's process died and Ray is restarting it; it resumes its jobs.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def submit(self, problems: Sequence[Any], flops_total: float | None = None,
               flops_per_problem: float | None = None, strategy: str | None = None,
               params: dict[str, Any] | None = None) -> str:
        """Submit a job (see ``EngineService.submit``); returns its id."""
        return self._call("submit", [_plain(p) for p in problems], _flops(flops_total),
                          _flops(flops_per_problem), strategy, params)

    def status(self, job_id: str | None = None) -> dict[str, Any]:
        """A job's progress, FLOPs and best answers so far; or all jobs' progress."""
        return self._call("status", job_id)

    def result(self, job_id: str, wait: bool = False, timeout: float | None = None,
               poll_s: float = 1.0) -> dict[str, Any] | None:
        """The finished job's summary and records; None while it runs (or waits, if ``wait``).

        Raises:
            TimeoutError: ``wait`` and the job did not finish within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = self._call("result", job_id)
            if result is not None or not wait:
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout}s")
            time.sleep(poll_s)

    def cancel(self, job_id: str) -> bool:
        """Stop a running job; True if it was running."""
        return self._call("cancel", job_id)

    def ping(self) -> dict[str, Any]:
        return self._call("ping")


def _flops(value: float | None) -> int | None:
    return None if value is None else int(float(value))


def _plain(problem: Any) -> list:
    from ponder.tasks.base import Problem

    if isinstance(problem, Problem):
        return [problem.problem_id, problem.problem, problem.reference]
    return problem


def _served(state_dir: str | Path | None) -> dict[str, Any]:
    """What ``ponder serve`` wrote to the state dir's serve.json; {} if nothing is served there."""
    path = Path(state_dir or DEFAULT_STATE_DIR).expanduser() / SERVE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def serve(config: Any, state_dir: str | Path, address: str | None = None,
          checkpoint_every_s: float = 30.0, num_cpus: int | None = None,
          stop_event: threading.Event | None = None) -> int:
    """``ponder serve``: start the engine actor; with a local Ray, stay up until stopped.

    Args:
        address: join this cluster and return once the actor is up; None: start a
            local Ray and block until SIGINT/SIGTERM or ``stop_event``.

    Returns:
        A process exit code.
    """
    import ray

    from ponder.cluster.runtime import connect

    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if address is None:
        # Ray's own ports require its auth token (~/.ray/auth_token): Ray's default for a new
        # local cluster, which ponder serve refuses to turn off.
        if os.environ.get(AUTH_MODE_ENV, "token") != "token":
            raise ValueError(f"ponder serve starts its Ray with token authentication; unset "
                             f"{AUTH_MODE_ENV} (it is {os.environ[AUTH_MODE_ENV]!r})")
        runtime = connect(config.ray, address=None, num_cpus=num_cpus, namespace=NAMESPACE,
                          _node_ip_address="127.0.0.1")
        served = "127.0.0.1:" + runtime.address.rpartition(":")[2]  # clients here use loopback
    else:
        runtime = connect(config.ray, address=address, namespace=NAMESPACE)
        served = runtime.address
    handle = start_actor(config, state_dir, checkpoint_every_s)
    info = {"address": served, "namespace": NAMESPACE, "name": ACTOR_NAME, "pid": os.getpid(),
            "local": runtime.is_local, "auth_mode": os.environ.get(AUTH_MODE_ENV)}
    (state_dir / SERVE_FILE).write_text(json.dumps(info) + "\n")
    print(f"ponder serve: engine up (Ray {served}, state {state_dir}); "
          f"submit with `ponder submit FILE --state-dir {state_dir}`", flush=True)
    if not runtime.is_local:
        ray.shutdown()  # the detached actor lives on in the cluster
        return 0
    stop = stop_event or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    try:
        ray.get(handle.call.remote("stop"), timeout=60)  # checkpoints every running job
    finally:
        (state_dir / SERVE_FILE).unlink(missing_ok=True)
        runtime.shutdown()
    print("ponder serve: stopped; unfinished jobs resume on the next `ponder serve`", flush=True)
    return 0
