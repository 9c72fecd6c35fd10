"""Connect to Ray: start a private local one, or join a running cluster; shut down cleanly.

A local Ray gets its own short temp dir (``/tmp/ponder-ray-<pid>-<n>``; Ray's unix
socket paths must stay under ~107 characters, so it never lives under a long
output path) and no dashboard, and the dir is removed at shutdown. Joining a
cluster (``address="auto"``, ``"host:port"``, ``"ray://host:port"``, or the
``RAY_ADDRESS`` environment variable) leaves the cluster running at shutdown.

To ship this source tree to a remote cluster, pass ``runtime_env=
{"working_dir": "."}`` (or use ``ray job submit --working-dir .``): the package
lives inside the working dir, so workers import it unchanged.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import ray

_counter = itertools.count()
# Ray puts unix sockets at <temp_dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store
# (up to 64 characters after temp_dir) and the kernel caps a socket path at 107.
MAX_TEMP_DIR_CHARS = 43


@dataclass
class RayRuntime:
    """A Ray connection made by ``connect``; ``shutdown()`` (or ``with``) ends it.

    Attributes:
        address: the cluster joined, or the address of the local Ray started.
        is_local: True if ``connect`` started this Ray (and so owns it).
        temp_dir: the local Ray's temp dir, None when joined.
        owns_temp_dir: True if ``connect`` made ``temp_dir`` (then shutdown removes it).
    """

    address: str
    is_local: bool
    temp_dir: str | None = None
    owns_temp_dir: bool = False
    runtime_env: dict[str, Any] = field(default_factory=dict)

    def shutdown(self) -> None:
        """Disconnect (a joined cluster keeps running); remove a local Ray's temp dir."""
        if ray.is_initialized():
            ray.shutdown()
        if self.owns_temp_dir and self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayRuntime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def connect(config: Any = None, *, address: str | None = None, num_cpus: int | None = None,
            temp_dir: str | None = None, runtime_env: dict[str, Any] | None = None,
            log_to_driver: bool = True, metrics_export_port: int | None = None,
            **init_kwargs: Any) -> RayRuntime:
    """Start or join Ray.

    Args:
        config: a ``ponder.config.RayConfig`` (or any object / dict with ``address``,
            ``num_cpus``, ``temp_dir``, ``runtime_env``); keyword arguments override it.
        address: None starts a local Ray unless ``RAY_ADDRESS`` is set; ``"auto"``,
            ``"host:port"`` or ``"ray://host:port"`` joins that cluster.
        num_cpus: CPUs of a local Ray (None lets Ray count them).
        temp_dir: a local Ray's temp dir; default a fresh short dir under /tmp.
        runtime_env: Ray runtime env for every actor (``working_dir``, ``env_vars``...).
        log_to_driver: print actors' stdout/stderr here.
        metrics_export_port: the port of a local Ray's Prometheus endpoint (every node's
            metrics agent serves ``/metrics`` there); None lets Ray pick one. A cluster
            sets it at ``ray start --metrics-export-port``.
        init_kwargs: passed on to ``ray.init`` (e.g. ``resources`` of a local Ray).

    Returns:
        The RayRuntime; call ``shutdown()`` when done.

    Raises:
        RuntimeError: Ray is already initialized in this process (by someone else).
        ValueError: ``num_cpus`` or ``temp_dir`` given while joining a cluster, or a
            ``temp_dir`` too long for Ray's unix sockets.
    """
    get = (config.get if isinstance(config, dict)
           else lambda k: getattr(config, k, None) if config is not None else None)
    address = address if address is not None else get("address")
    num_cpus = num_cpus if num_cpus is not None else get("num_cpus")
    temp_dir = temp_dir if temp_dir is not None else get("temp_dir")
    runtime_env = dict(runtime_env if runtime_env is not None else get("runtime_env") or {})
    if metrics_export_port is None:
        metrics_export_port = get("metrics_export_port")
    if temp_dir is not None and len(os.path.abspath(temp_dir)) > MAX_TEMP_DIR_CHARS:
        raise ValueError(f"ray.temp_dir {temp_dir!r} is too long for Ray's unix socket paths: "
                         f"use at most {MAX_TEMP_DIR_CHARS} characters (e.g. /tmp/ponder-ray), "
                         f"or leave it unset")
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process; call ray.shutdown() "
                           "or use the existing connection instead of connect()")
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(runtime_env=runtime_env or None, log_to_driver=log_to_driver, **init_kwargs)
    if address is not None:
        if num_cpus is not None or temp_dir is not None or metrics_export_port is not None:
            raise ValueError(f"ray.num_cpus / ray.temp_dir / ray.metrics_export_port apply to a "
                             f"local Ray only; got num_cpus={num_cpus!r}, temp_dir={temp_dir!r}, "
                             f"metrics_export_port={metrics_export_port!r} with address={address!r}")
        context = ray.init(address=address, **common)
        return RayRuntime(address=_address_of(context, address), is_local=False,
                          runtime_env=runtime_env)
    owned = temp_dir is None
    if metrics_export_port is not None:
        common["_metrics_export_port"] = metrics_export_port
    temp_dir = temp_dir or tempfile.mkdtemp(prefix=f"ponder-ray-{os.getpid()}-{next(_counter)}-",
                                            dir="/tmp")
    try:
        context = ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, include_dashboard=False,
                           **common)
    except Exception:
        if owned:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return RayRuntime(address=_address_of(context, "local"), is_local=True,
                      temp_dir=temp_dir, owns_temp_dir=owned, runtime_env=runtime_env)


def _address_of(context: Any, default: str) -> str:
    return getattr(context, "address_info", {}).get("address", default) or default
