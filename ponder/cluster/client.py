"""The clients of ``ponder serve`` (``ponder.cluster.server``): ``PonderClient`` and the commands' calls.

    ponder serve --config configs/game24.yaml --state-dir ~/.ponder/serve   # blocks; Ctrl-C stops
    ponder submit puzzles.jsonl --budget 1e14 --strategy mcts             # prints the job id
    ponder status [JOB]     ponder result JOB     ponder cancel JOB

From Python::

    client = PonderClient()                 # finds the engine through the state dir's serve.json
    job_id = client.submit(problems, flops_total=1e14)
    client.status(job_id)["best"]           # best answer so far, per problem
    client.result(job_id, wait=True)

Without ``--address`` ``ponder serve`` starts a local Ray and keeps it alive in
the foreground; every port of that Ray listens on 127.0.0.1 only, clients on the
same machine join it there, and it requires Ray's auth token as well
(``RAY_AUTH_MODE=token``, the token in ``~/.ray/auth_token``). The engine opens no
port of its own, and there is no dashboard and no Ray client server. With
``--address`` it places the actor on that cluster, which must have token
authentication on, and returns: the actor is detached and outlives it. A client
sends its token and gets one clear error (``TokenRefused``) if it is missing or
wrong (``ponder.cluster.auth``). The actor restarts if its process dies
(``max_restarts=-1``) and resumes every unfinished job from its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ponder.cluster.auth import check_client, gcs_address, is_loopback, use_loopback, use_token
from ponder.engine.service import ACTOR_NAME, NAMESPACE, SERVE_FILE
from ponder.tasks.base import Problem

DEFAULT_STATE_DIR = Path("~/.ponder/serve")


def unwrap_actor_error(fn):
    """Run ``fn``; re-raise an actor's exception as itself rather than a RayTaskError."""
    from ray.exceptions import RayTaskError  # Ray: lazy, `ponder --help` imports this module

    try:
        return fn()
    except RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


class PonderClient:
    """Talks to the engine started by ``ponder serve``: ``ponder submit/status/result/cancel``
    from Python.

    Example::

        from ponder.cluster.client import PonderClient
        from ponder.tasks import Problem

        client = PonderClient(state_dir="~/.ponder/serve")
        job_id = client.submit([Problem("a", "4 4 6 8"), Problem("b", "1 2 3 4")],
                               flops_total=1e14, strategy="beam", params={"beam_width": 4})
        client.status(job_id)             # num_finished, flops_spent, best answer per problem
        done = client.result(job_id, wait=True, timeout=600)
        done["summary"]["accuracy"], [r["answer"] for r in done["results"]]
        client.cancel(job_id)             # False: it already finished

    Args:
        address: the Ray cluster (default: the state dir's ``serve.json``, else
            ``RAY_ADDRESS``, else this machine's Ray). Ignored if Ray is already connected.
        state_dir: where ``ponder serve`` keeps its state (default ``~/.ponder/serve``).
        restart_wait_s: how long a call waits for an engine that Ray is restarting.
        token: the cluster's Ray auth token (default: ``RAY_AUTH_TOKEN``, else the file
            ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``).

    Raises:
        TokenRefused: the engine's Ray requires a token and ours is missing or wrong.
        ConnectionError: nothing answers at the engine's address.
        RuntimeError: no engine is running there.
    """

    def __init__(self, address: str | None = None, state_dir: str | Path | None = None,
                 restart_wait_s: float = 300.0, token: str | None = None):
        import ray  # Ray: lazy, `ponder --help` imports this module

        self.restart_wait_s = restart_wait_s
        if not ray.is_initialized():
            ray.init(address=_join(address, state_dir, token), namespace=NAMESPACE,
                     logging_level="ERROR", log_to_driver=False)
        try:
            self.actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        except ValueError:
            raise RuntimeError(f"no ponder engine is running (no actor {ACTOR_NAME!r} in namespace "
                               f"{NAMESPACE!r}); start one with `ponder serve`") from None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray  # Ray: lazy, `ponder --help` imports this module
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + self.restart_wait_s
        while True:
            try:
                return unwrap_actor_error(lambda: ray.get(self.actor.call.remote(method, *args, **kwargs)))
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
        """Liveness: the engine's task, state dir, default strategy and number of running jobs."""
        return self._call("ping")


def _join(address: str | None, state_dir: str | Path | None, token: str | None) -> str:
    """The address a client joins, after checking that the engine's Ray lets it in.

    Raises:
        TokenRefused, ConnectionError: see ``check_client``. RuntimeError: no engine found.
    """
    served = _served(state_dir)
    source = _serve_file(state_dir) if not address and served.get("address") else ""
    address = address or served.get("address") or os.environ.get("RAY_ADDRESS") or "auto"
    if address.startswith("ray://"):  # Ray Client checks its own token; ponder cannot probe it
        if served.get("auth_mode") or token is not None:
            use_token(token)
        return address
    try:
        gcs = gcs_address(address)
    except ConnectionError as e:
        raise RuntimeError(f"no ponder engine found: {_serve_file(state_dir)} does not exist and "
                           f"no single Ray runs on this machine ({e}); start one with `ponder "
                           f"serve`, or give --address / --state-dir") from None
    if is_loopback(gcs):
        use_loopback()  # a Ray on loopback only takes clients in its single-machine mode
    check_client(gcs, token, source)
    return address


def _flops(value: float | None) -> int | None:
    return None if value is None else int(float(value))


def _plain(problem: Any) -> list:
    if isinstance(problem, Problem):
        return [problem.problem_id, problem.problem, problem.reference]
    return problem


def _serve_file(state_dir: str | Path | None) -> Path:
    return Path(state_dir or DEFAULT_STATE_DIR).expanduser() / SERVE_FILE


def _served(state_dir: str | Path | None) -> dict[str, Any]:
    """What ``ponder serve`` wrote to the state dir's serve.json; {} if nothing is served there."""
    path = _serve_file(state_dir)
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
