"""A sweep cell's fingerprint: a hash of everything that decides its results.

A finished cell is skipped when its recorded fingerprint is the one asked for now
(``ponder.sweep.run``). The hash covers the cell's config, less where and how it
ran (``UNFINGERPRINTED`` sections, replica resources), its problem ids, and the
*weights* its models load from local files: new weights at the same path (``ponder
train`` into ``ponder/models/weights``, or a retrained ``model_path``) make every cell
that uses them run again, instead of reporting the old weights' results as done.

Files up to ``HASH_LIMIT`` bytes are hashed by content (the embedded models are a few
MB); larger ones (multi-GB checkpoints) by size and modification time, which a copy
without ``-p`` also changes: a needless rerun, never a stale cell.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ponder.config import Config, resolve_package_path

UNFINGERPRINTED = ("output", "ray", "engine")  # where it ran and how it was batched and shown
RESOURCE_FIELDS = ("num_replicas", "num_cpus", "num_gpus", "tensor_parallel_size", "placement")
ROLES = ("generator", "verifier")
HASH_LIMIT = 256 * 2**20  # bytes: hash a file's content up to this size


def fingerprint(config: Config, problem_ids: list[str]) -> str:
    """A hash of what decides a cell's results: config, problem ids and local model weights."""
    data = config.to_dict()
    for section in UNFINGERPRINTED:
        data.pop(section, None)
    for role in ROLES:
        if data.get(role):
            for name in RESOURCE_FIELDS:
                data[role].pop(name, None)
    weights = {role: weights_signature(data[role]) for role in ROLES if data.get(role)}
    text = yaml.safe_dump({"config": data, "problems": list(problem_ids), "weights": weights},
                          sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_signature(role: dict[str, Any]) -> str | None:
    """A hash of the local weight files one model role loads; None if it loads none from here.

    Args:
        role: a ``generator`` / ``verifier`` config section as a dict (``backend``, ``model_path``).
    """
    path = role.get("model_path")
    if path is None and role.get("backend") == "embedded":
        path = embedded_weights_dir()
    if path is None:
        return None
    path = Path(os.path.expanduser(resolve_package_path(str(path))))
    if not path.exists():  # a hub id (Qwen/...), resolved by the backend, not a file here
        return None
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0".encode())
        digest.update(_file_signature(str(file), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def embedded_weights_dir() -> Path | None:
    """``ponder/models/weights``, found without importing ``ponder.models`` (which imports torch)."""
    spec = importlib.util.find_spec("ponder.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


@lru_cache(maxsize=256)
def _file_signature(path: str, size: int, mtime_ns: int) -> str:
    # Cached on (path, size, mtime): a sweep asks for each cell's fingerprint more than once.
    if size > HASH_LIMIT:
        return f"{size}:{mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
