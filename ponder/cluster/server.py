"""The server side of ``ponder serve``: the engine as a named, detached Ray actor.

``serve`` starts (or joins) the Ray the engine runs on, creates the actor that
holds an ``EngineService`` (``ponder.engine.service``) on Ray replica pools, writes
the state dir's ``serve.json`` for clients (``ponder.cluster.client``), and with a
local Ray stays up until stopped. Every Ray port requires the token
(``ponder.cluster.auth``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import ray

from ponder.actors.requirements import check_requirements
from ponder.cluster.auth import AUTH_MODE_ENV, gcs_address, require_token_auth, use_loopback
from ponder.cluster.client import unwrap_actor_error
from ponder.cluster.metrics import RayJobMetrics
from ponder.cluster.pools import build_ray_pools
from ponder.cluster.runtime import connect
from ponder.engine.metrics import NO_METRICS
from ponder.tasks import task_from_config
from ponder.engine.service import ACTOR_NAME, NAMESPACE, SERVE_FILE, EngineService


class EngineActorBody:
    """What runs inside the Ray actor: an EngineService on Ray replica pools."""

    def __init__(self, config: Any, state_dir: str, checkpoint_every_s: float):
        pools = build_ray_pools(config, connect_ray=False, task=task_from_config(config.task))
        interval = config.engine.metrics_interval_s
        metrics = RayJobMetrics(interval, engine="serve") if interval else NO_METRICS
        self.service = EngineService(config, state_dir, pools, checkpoint_every_s=checkpoint_every_s,
                                     metrics=metrics)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in ("submit", "status", "result", "cancel", "ping", "stop"):
            raise ValueError(f"unknown engine method {method!r}")
        return getattr(self.service, method)(*args, **kwargs)


def start_actor(config: Any, state_dir: str | Path, checkpoint_every_s: float = 30.0) -> Any:
    """Create (or find) the detached engine actor on the connected Ray; returns its handle.

    Raises:
        RuntimeError: the engine failed to start (its error in the message).
    """
    actor_cls = ray.remote(EngineActorBody)
    handle = actor_cls.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=0, max_concurrency=16, num_cpus=0,
    ).remote(config, str(Path(state_dir).expanduser().resolve()), checkpoint_every_s)
    unwrap_actor_error(lambda: ray.get(handle.call.remote("ping"), timeout=600))
    return handle


def serve(config: Any, state_dir: str | Path, address: str | None = None,
          checkpoint_every_s: float = 30.0, num_cpus: int | None = None,
          stop_event: threading.Event | None = None) -> int:
    """``ponder serve``: start the engine actor; with a local Ray, stay up until stopped.

    Args:
        address: join this cluster (``host:port`` or ``auto``; default ``RAY_ADDRESS``)
            and return once the actor is up; None: start a local Ray and block until
            SIGINT/SIGTERM or ``stop_event``.

    Returns:
        A process exit code.

    Raises:
        ValueError: ``RAY_AUTH_MODE`` is set to something other than ``token``, the
            cluster at ``address`` has no token authentication, or ``address`` is ``ray://``.
        TokenRefused: the cluster refuses this process's token.
    """
    check_requirements(config)
    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    runtime, served = _serve_ray(config, address or os.environ.get("RAY_ADDRESS"), num_cpus)
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


def _serve_ray(config: Any, address: str | None, num_cpus: int | None) -> tuple[Any, str]:
    """Start (``address`` None) or join the Ray that ponder serve runs on; ``(runtime, address
    clients use)``. Either way every Ray port requires the token (``ponder.cluster.auth``)."""
    if os.environ.get(AUTH_MODE_ENV, "token") != "token":
        raise ValueError(f"ponder serve runs only on a Ray with token authentication; unset "
                         f"{AUTH_MODE_ENV} (it is {os.environ[AUTH_MODE_ENV]!r})")
    if address is None:
        # Every port on 127.0.0.1, and token auth too: Ray's default for a new local cluster
        # (RAY_AUTH_MODE is unset or token), against the machine's other users.
        use_loopback()
        runtime = connect(config.ray, address=None, num_cpus=num_cpus, namespace=NAMESPACE)
        return runtime, runtime.address
    gcs = gcs_address(address)
    require_token_auth(gcs)  # also turns token mode on here, so this process sends it
    runtime = connect(config.ray, address=gcs, namespace=NAMESPACE)
    return runtime, runtime.address

