"""Build the generator and verifier pools from config: placement groups, actors, routing.

    pools = build_pools(config.generator, config.verifier,
                        max_in_flight_batches=config.engine.max_in_flight_batches)
    ...                                    # see ponder.actors.pool for dispatch / collect
    pools.shutdown()

Actors are created with ``max_restarts`` (default -1: Ray restarts a dead actor as
often as needed) and no task retries: the pool re-dispatches a failed call itself,
to any healthy replica, instead of waiting for the dead one to come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from ponder.actors.factory import spec_from_config
from ponder.actors.generator import GeneratorActor
from ponder.actors.pool import ReplicaPool, collect
from ponder.actors.verifier import VerifierActor
from ponder.cluster.runtime import connect
from ponder.cluster.placement import ReplicaResources, RolePlacement
from ponder.config import Config
from ponder.search.messages import Result

ROLE_ACTORS = {"generator": (GeneratorActor, "generate"), "verifier": (VerifierActor, "score")}


@dataclass
class RayPools:
    """The job's Ray replica pools (``ponder.engine.pools.Pools``), their placement groups, and
    the Ray connection to end at shutdown (None leaves Ray running: a test's, a notebook's)."""

    generator: ReplicaPool
    verifier: ReplicaPool | None = None  # None for strategies that only vote
    placements: list[RolePlacement] = field(default_factory=list)
    runtime: Any = None  # ponder.cluster.runtime.RayRuntime this object started, or None

    def all(self) -> list[ReplicaPool]:
        """The pools that exist, for ``collect``."""
        return [p for p in (self.generator, self.verifier) if p is not None]

    def collect(self, timeout: float) -> list[Result]:
        """Whatever any pool's calls returned, waiting up to ``timeout`` for the first."""
        return collect(self.all(), timeout=timeout)

    def shutdown(self) -> None:
        """Kill every actor, give the placement groups back, end the Ray this object started."""
        try:
            for pool in self.all():
                pool.shutdown()
            for placement in self.placements:
                placement.remove()
            self.placements = []
        finally:
            if self.runtime is not None:
                self.runtime.shutdown()
                self.runtime = None


def build_pool(cfg: Any, role: str, *, max_in_flight_batches: int = 2, affinity_margin: int = 16,
               max_attempts: int = 5, max_restarts: int = -1, timeout_s: float = 600.0,
               task_events: bool = False, max_batch_requests: int | None = None,
               max_batch_tokens: int | None = None,
               batch_wait_s: float = 0.0, task: Any = None) -> tuple[ReplicaPool, RolePlacement]:
    """Place and start one role's replicas and wrap them in a ReplicaPool.

    Args:
        cfg: the role's ``ModelConfig`` (or a dict with its fields).
        role: ``"generator"`` or ``"verifier"``.
        max_in_flight_batches, affinity_margin, max_attempts: see ``ReplicaPool``.
        max_restarts: Ray restarts of each actor (-1: unlimited).
        timeout_s: how long placement and each replica's start may take.
        task: the job's task; a chat generator takes its system prompt and few-shot turns.

    Returns:
        The pool (every replica answered a ping) and its placement, to remove at the end.

    Raises:
        ValueError: unknown role, backend or placement strategy.
        TimeoutError: the cluster cannot host the replicas, or they start too slowly.
        RuntimeError: a replica's backend failed to build (the message has its error).
    """
    if role not in ROLE_ACTORS:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLE_ACTORS)}")
    actor_cls, method = ROLE_ACTORS[role]
    spec = spec_from_config(cfg, task if role == "generator" else None)
    placement = RolePlacement(ReplicaResources.from_config(cfg), role, timeout_s=timeout_s)
    remote_cls = ray.remote(actor_cls)

    def make(index: int) -> Any:
        return remote_cls.options(max_restarts=max_restarts, max_task_retries=0, name=None,
                                  enable_task_events=task_events,
                                  **placement.options(index)).remote(spec)

    actors = [make(i) for i in range(placement.res.num_replicas)]
    try:
        ray.get([a.ping.remote() for a in actors], timeout=timeout_s)
    except (RayActorError, GetTimeoutError) as e:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        placement.remove()
        if isinstance(e, GetTimeoutError):
            raise TimeoutError(f"{role} replicas ({spec.name}) did not start within "
                               f"{timeout_s:.0f}s") from None
        cause = str(e).strip().splitlines()[-1]  # the backend's exception, not Ray's traceback
        raise RuntimeError(f"{role} replica ({spec.name}) failed to start: {cause}") from e
    pool = ReplicaPool(actors, method, factory=make, max_in_flight_batches=max_in_flight_batches,
                       affinity_margin=affinity_margin, max_attempts=max_attempts, name=role,
                       max_batch_requests=max_batch_requests, max_batch_tokens=max_batch_tokens,
                       batch_wait_s=batch_wait_s, packed=True)
    return pool, placement


def build_pools(generator_cfg: Any, verifier_cfg: Any = None, **kwargs: Any) -> RayPools:
    """Build the generator pool and, if ``verifier_cfg`` is not None, the verifier pool.

    Args:
        generator_cfg: ``config.generator``.
        verifier_cfg: ``config.verifier`` or None.
        kwargs: passed to ``build_pool`` (``max_in_flight_batches`` and so on).

    Returns:
        RayPools with both roles ready; call ``shutdown()`` when done.

    Raises:
        As ``build_pool``; a verifier that fails to start also tears the generator down.
    """
    generator, gen_placement = build_pool(generator_cfg, "generator", **kwargs)
    pools = RayPools(generator=generator, placements=[gen_placement])
    if verifier_cfg is not None:
        try:
            pools.verifier, ver_placement = build_pool(verifier_cfg, "verifier", **kwargs)
        except BaseException:
            pools.shutdown()
            raise
        pools.placements.append(ver_placement)
    return pools


def pool_options(config: Config) -> dict[str, Any]:
    """``build_pools`` keyword arguments from ``config.engine``."""
    engine = config.engine
    return dict(max_in_flight_batches=engine.max_in_flight_batches,
                max_batch_requests=engine.max_batch_requests,
                max_batch_tokens=engine.max_batch_tokens, batch_wait_s=engine.batch_wait_s,
                task_events=engine.ray_task_events)


def build_ray_pools(config: Config, connect_ray: bool = True, task: Any = None) -> RayPools:
    """Create the replica pools ``config`` names, connecting to (or starting) Ray first.

    Args:
        config: the job config (``generator``, ``verifier``, ``engine``, ``ray``).
        connect_ray: False when this process is already connected to Ray; then
            shutting the pools down leaves Ray running.
        task: the job's task (a chat generator renders its prompts with the task's turns).
    """
    runtime = connect(config.ray) if connect_ray else None
    try:
        pools = build_pools(config.generator, config.verifier, task=task, **pool_options(config))
    except BaseException:
        if runtime is not None:
            runtime.shutdown()
        raise
    pools.runtime = runtime
    return pools
