"""Build a generator or verifier backend from a plain-data spec, importing its module lazily.

Actors receive a ``BackendSpec`` (picklable, small) and call ``build_backend`` in
their own process, so the driver never imports torch, transformers or vllm just to
name a backend. A spec's ``name`` is a registry name (``BACKENDS``) or, for a
backend of your own, ``"package.module:Class"`` importable on every node; the
class takes ``**kwargs`` and implements ``ponder.actors.backends.base``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.config import BACKENDS, resolve_package_path  # BACKENDS: name -> (module, generator, verifier)

CHAT_BACKENDS = ("hf", "vllm")  # backends that render prompts in a chat format (ponder.actors.backends.chat)

ROLES = ("generator", "verifier")
# (backend name, role, kwarg) -> (module, class): a backend that a kwarg turns into another
# class, e.g. the hf verifier with a value head trained on the generator's states
VARIANTS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("hf", "verifier", "value_head"): ("ponder.actors.backends.hf_head", "HFHeadVerifier"),
}


@dataclass(slots=True)
class BackendSpec:
    """Which backend an actor builds, with what arguments; plain data, shipped to the actor.

    Attributes:
        name: a key of ``BACKENDS`` or ``"module:Class"``.
        kwargs: constructor keyword arguments, passed as is.
        num_threads: torch intra-op threads in the actor (torch is set only if the
            backend imported it); from the replica's ``num_cpus``, at least 1.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_threads: int = 1


def spec_from_config(cfg: Any, task: Any = None) -> BackendSpec:
    """The BackendSpec of one model role's config.

    Args:
        cfg: a ``ponder.config.ModelConfig`` or a dict with its fields (``backend``,
            ``model_path``, ``gguf_file``, ``chat_template``, ``kwargs``, ``num_cpus``,
            ``tensor_parallel_size``).
        task: the job's ``ponder.tasks.base.Task``, for a generator: its system prompt
            and few-shot examples go to a chat backend (hf, vllm).

    Returns:
        The spec: ``kwargs`` plus ``model_path`` and ``gguf_file`` when set, plus
        ``tensor_parallel_size`` for vllm (which spreads one replica over its GPUs);
        for hf and vllm a ``chat_template`` other than "auto" (a file's text, read
        here so that actors on other nodes need no copy) and the task's prompts.

    Raises:
        OSError: a chat template file that cannot be read.
    """
    get = cfg.get if isinstance(cfg, dict) else lambda key, default=None: getattr(cfg, key, default)
    name = get("backend", "embedded")
    kwargs = dict(get("kwargs", None) or {})
    for key in ("model_path", "gguf_file"):
        if get(key, None):
            kwargs.setdefault(key, get(key))
    if name in CHAT_BACKENDS:
        kwargs.update({k: v for k, v in _chat_kwargs(get("chat_template", "auto"), task).items() if k not in kwargs})
    tp = int(get("tensor_parallel_size", 1) or 1)
    if name == "vllm":
        kwargs.setdefault("tensor_parallel_size", tp)
    num_threads = max(1, int(get("num_cpus", 1) or 1))
    return BackendSpec(name=name, kwargs=kwargs, num_threads=num_threads)


def _chat_kwargs(chat_template: str | None, task: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if chat_template not in (None, "auto"):
        path = Path(chat_template).expanduser()
        kwargs["chat_template"] = chat_template if chat_template == "none" else path.read_text()
    if task is not None:
        system_prompt, few_shot = task.system_prompt(), task.few_shot()
        if system_prompt:
            kwargs["system_prompt"] = system_prompt
        if few_shot:
            kwargs["few_shot"] = [list(pair) for pair in few_shot]  # plain lists: pickled to actors
    return kwargs


def resolve_backend_class(name: str, role: str) -> type:
    """The backend class for ``name`` in ``role``, importing its module now.

    Raises:
        ValueError: unknown backend name or role, naming the valid ones.
        ImportError: the backend's module (or an optional dependency) is missing.
    """
    if role not in ROLES:
        raise ValueError(f"unknown backend role {role!r}; valid: {', '.join(ROLES)}")
    if name in BACKENDS:
        module_name, generator_cls, verifier_cls = BACKENDS[name]
        class_name = generator_cls if role == "generator" else verifier_cls
        if ":" in class_name:
            module_name, _, class_name = class_name.partition(":")
    elif ":" in name:
        module_name, _, class_name = name.partition(":")
    else:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)} "
                         f"or 'package.module:Class'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"backend {name!r}: module {module_name!r} has no {role} class "
                         f"{class_name!r}") from None


def build_backend(spec: BackendSpec, role: str) -> Any:
    """Construct the backend a spec names.

    Args:
        spec: which backend and its constructor kwargs.
        role: ``"generator"`` or ``"verifier"``.

    Returns:
        A GeneratorBackend or VerifierBackend instance; the class of ``VARIANTS`` when
        the spec's kwargs name one (``hf`` verifier + ``value_head``: ``HFHeadVerifier``).

    Raises:
        ValueError: unknown backend name or role, or a ``pkg:`` model path naming no
            installed package.
        ImportError: the backend's module or one of its dependencies is not installed.
    """
    variant = next((VARIANTS[key] for key in VARIANTS if key[:2] == (spec.name, role)
                    and spec.kwargs.get(key[2]) is not None), None)
    if variant is not None:
        cls = getattr(importlib.import_module(variant[0]), variant[1])
    else:
        cls = resolve_backend_class(spec.name, role)
    kwargs = dict(spec.kwargs)
    if isinstance(kwargs.get("model_path"), str):  # resolved here, on the node that loads it
        kwargs["model_path"] = resolve_package_path(kwargs["model_path"])
    return cls(**kwargs)
