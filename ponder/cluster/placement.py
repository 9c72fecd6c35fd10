"""Where a role's replicas run: placement groups and the actor options that use them.

Resources come from the role's config (``num_replicas``, ``num_cpus``, ``num_gpus``
per replica, ``tensor_parallel_size``, ``placement``), never from actor code.

- ``tensor_parallel_size == 1``: one placement group for the role with one bundle
  per replica (``{"CPU": num_cpus, "GPU": num_gpus}``), placed with the role's
  strategy: ``SPREAD`` / ``STRICT_SPREAD`` put replicas on different nodes,
  ``PACK`` / ``STRICT_PACK`` fill a node first. Replica i runs in bundle i.
- ``tensor_parallel_size == tp > 1``: one ``STRICT_PACK`` group per replica with
  ``tp`` bundles of one GPU each (all on one node, as tensor parallel needs); the
  actor takes its CPUs in bundle 0 and no GPU, and its child tasks (a vLLM engine's
  Ray workers) are captured into the group so each lands on one of its GPUs. Ray
  cannot nest strategies, so spreading tp groups over nodes is left to Ray.
- a replica that asks for no resources at all gets no placement group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(slots=True)
class ReplicaResources:
    """One role's resource request, read from its config."""

    num_replicas: int = 1
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica (ignored when tensor_parallel_size > 1: one per rank)
    tensor_parallel_size: int = 1
    placement: str = "PACK"  # strategy between replicas (tensor_parallel_size == 1)
    resources: dict[str, float] = field(default_factory=dict)  # custom resources per replica

    @classmethod
    def from_config(cls, cfg: Any) -> "ReplicaResources":
        """Read the fields of a ``ModelConfig`` (or a dict with them); missing ones default."""
        get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
        out = cls()
        for name in ("num_replicas", "num_cpus", "num_gpus", "tensor_parallel_size",
                     "placement", "resources"):
            value = get(name, None)
            if value is not None:
                setattr(out, name, value)
        if out.placement not in STRATEGIES:
            raise ValueError(f"placement: unknown strategy {out.placement!r}; "
                             f"valid: {', '.join(STRATEGIES)}")
        return out


class RolePlacement:
    """Placement groups reserved for one role, and each replica's actor options.

    Args:
        res: what to reserve.
        name: the role, for messages.
        timeout_s: how long to wait for the groups to be placed.

    Raises:
        TimeoutError: the cluster cannot host the groups within ``timeout_s`` (the
            message names the request and the cluster's resources).
    """

    def __init__(self, res: ReplicaResources, name: str, timeout_s: float = 120.0):
        self.res = res
        self.name = name
        self.groups: list[PlacementGroup] = []
        if res.tensor_parallel_size > 1:
            for i in range(res.num_replicas):
                self.groups.append(placement_group(self._tp_bundles(), strategy="STRICT_PACK"))
        elif self._bundle():
            self.groups.append(placement_group([self._bundle()] * res.num_replicas,
                                               strategy=res.placement))
        self._wait(timeout_s)

    def _bundle(self) -> dict[str, float]:
        r = self.res
        bundle = {"CPU": r.num_cpus, "GPU": r.num_gpus, **r.resources}
        return {k: v for k, v in bundle.items() if v > 0}

    def _tp_bundles(self) -> list[dict[str, float]]:
        r = self.res
        first = {k: v for k, v in {"CPU": r.num_cpus, "GPU": 1, **r.resources}.items() if v > 0}
        return [first] + [{"GPU": 1}] * (r.tensor_parallel_size - 1)

    def _wait(self, timeout_s: float) -> None:
        if not self.groups:
            return
        ready, _ = ray.wait([g.ready() for g in self.groups], num_returns=len(self.groups),
                            timeout=timeout_s)
        if len(ready) < len(self.groups):
            self.remove()
            want = self._tp_bundles() if self.res.tensor_parallel_size > 1 else self._bundle()
            raise TimeoutError(
                f"{self.name}: could not place {self.res.num_replicas} replica(s) of {want} "
                f"(tensor_parallel_size={self.res.tensor_parallel_size}, placement="
                f"{self.res.placement}) within {timeout_s:.0f}s; cluster has "
                f"{ray.cluster_resources()}")

    def options(self, index: int) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options(...)`` that put replica ``index`` in place."""
        r = self.res
        if r.tensor_parallel_size > 1:
            strategy = PlacementGroupSchedulingStrategy(
                self.groups[index], placement_group_bundle_index=0,
                placement_group_capture_child_tasks=True)
            return dict(num_cpus=r.num_cpus, num_gpus=0, resources=dict(r.resources),
                        scheduling_strategy=strategy)
        opts: dict[str, Any] = dict(num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                                    resources=dict(r.resources))
        if self.groups:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.groups[0], placement_group_bundle_index=index)
        return opts

    def remove(self) -> None:
        """Give the reserved resources back (kill the actors first)."""
        for group in self.groups:
            remove_placement_group(group)
        self.groups = []
