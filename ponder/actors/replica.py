"""What generator and verifier actors share: build one backend, answer pings, count work.

The actor classes are plain Python classes (usable in-process too); the pool builder
wraps them with ``ray.remote`` and the resources from config, so no resource number
lives in actor code.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass

from ponder.actors.factory import BackendSpec, build_backend
from ponder.search.flops import ModelSpec
from ponder.search.messages import pack, unpack


@dataclass(slots=True)
class ReplicaInfo:
    """Where a replica runs and what it did; the answer to ``ping()`` and ``stats()``."""

    role: str
    backend: str
    pid: int
    node_id: str  # Ray node id ("" outside Ray)
    restarted: bool  # True if Ray re-created this actor after a failure
    num_calls: int = 0
    num_requests: int = 0
    busy_s: float = 0.0  # seconds spent inside backend calls


class BackendActor:
    """Hosts one backend; subclasses add the role's batch method.

    Args:
        spec: which backend to build (in this process) and with what arguments.
    """

    role = ""

    def __init__(self, spec: BackendSpec):
        self._backend = build_backend(spec, self.role)
        torch = sys.modules.get("torch")
        if torch is not None:  # only a backend that uses torch pays for importing it
            torch.set_num_threads(spec.num_threads)
        self._info = ReplicaInfo(role=self.role, backend=spec.name, pid=os.getpid(),
                                 node_id=_node_id(), restarted=_was_restarted())

    def model_spec(self) -> ModelSpec:
        """The backend's ModelSpec (what the FLOP formula needs)."""
        return self._backend.model_spec()

    def ping(self) -> ReplicaInfo:
        """Cheap liveness probe; also says where the replica runs."""
        return self._info

    def stats(self) -> ReplicaInfo:
        """Counters of the work done since this process started."""
        return self._info

    def _run(self, method, requests: list) -> list:
        start = time.perf_counter()
        results = method(requests)
        if len(results) != len(requests):  # a backend bug would silently lose requests
            raise RuntimeError(f"{self._info.backend} {self.role} returned {len(results)} "
                               f"results for {len(requests)} requests")
        self._info.busy_s += time.perf_counter() - start
        self._info.num_calls += 1
        self._info.num_requests += len(requests)
        return results

    def _run_packed(self, batch_method, data: bytes) -> bytes:
        # Ray pools ship batches in the wire format (``messages.pack``) both ways.
        return pack(batch_method(unpack(data)))


def _node_id() -> str:
    try:
        import ray
        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return ""


def _was_restarted() -> bool:
    try:
        import ray
        if ray.is_initialized():
            # Ray's own property reads its deprecated ``actor_id`` and warns in every actor's log.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except (ImportError, RuntimeError, AttributeError):
        pass
    return False
