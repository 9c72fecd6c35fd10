"""Ray actors hosting the models, and the pools that route work to their replicas.

``GeneratorActor`` / ``VerifierActor`` wrap one backend each (built from a
``BackendSpec`` by ``factory.build_backend``); ``ReplicaPool`` routes batches over
a role's replicas and survives their failures; ``collect`` waits on several pools
at once. ``ponder.cluster.pools.build_pools`` builds them from config.

The pool names are imported on first use, so importing a backend module
(``ponder.actors.backends.*``) does not import Ray.
"""

from typing import Any

from ponder.actors.factory import BACKENDS, BackendSpec, build_backend, spec_from_config
from ponder.actors.generator import GeneratorActor
from ponder.actors.replica import ReplicaInfo
from ponder.actors.verifier import VerifierActor

_POOL_NAMES = ("NoReplicasError", "ReplicaPool", "collect")

__all__ = ["BACKENDS", "BackendSpec", "GeneratorActor", "ReplicaInfo", "VerifierActor",
           "build_backend", "spec_from_config", *_POOL_NAMES]


def __getattr__(name: str) -> Any:
    if name in _POOL_NAMES:
        from ponder.actors import pool
        return getattr(pool, name)
    raise AttributeError(f"module 'ponder.actors' has no attribute {name!r}")
