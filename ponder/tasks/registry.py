"""Find a task by registry name (``game24``) or plugin path (``my_pkg.tasks:MyTask``)."""

from __future__ import annotations

import importlib
from typing import Any

from ponder.tasks.base import Task

# registry name -> "module:Class"; imported on first use so that loading one task never
# pays for another's imports (sympy for math)
_BUILTIN: dict[str, str] = {
    "game24": "ponder.tasks.game24:Game24Task",
    "countdown": "ponder.tasks.countdown:CountdownTask",
    "math": "ponder.tasks.math_task:MathTask",
    "gsm8k": "ponder.tasks.gsm8k:Gsm8kTask",
}
_REGISTERED: dict[str, type] = {}  # name -> task class added at run time
_PROTOCOL_ATTRS = ("step_delimiter", "max_steps")
_PROTOCOL_METHODS = ("prompt", "is_terminal", "extract_answer")


def task_names() -> list[str]:
    """Every registry name, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def register_task(name: str, cls: type) -> None:
    """Add a task class under ``name`` (it must subclass Task or satisfy the protocol).

    Raises:
        ValueError: if ``name`` is taken by a built-in task or ``cls`` is not a task.
    """
    if name in _BUILTIN:
        raise ValueError(f"task name {name!r} is built in; choose another")
    _check_task_class(cls, name)
    _REGISTERED[name] = cls


def _missing_members(obj: Any) -> list[str]:
    missing = [a for a in _PROTOCOL_ATTRS if not hasattr(obj, a)]
    return missing + [m for m in _PROTOCOL_METHODS if not callable(getattr(obj, m, None))]


def _check_task_class(cls: Any, where: str) -> None:
    if isinstance(cls, type) and issubclass(cls, Task):
        return
    missing = _missing_members(cls)
    if missing:
        raise ValueError(f"{where} is not a task: it neither subclasses ponder.tasks.Task nor "
                         f"has {', '.join(missing)} (needs {_PROTOCOL_ATTRS + _PROTOCOL_METHODS})")


def _import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"task plugin {path!r} must be 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import task plugin module {module_name!r} (from {path!r}): {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"task plugin {path!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def get_task(name_or_path: str | Task, **kwargs: Any) -> Task:
    """A task instance from a registry name or a ``module:Class`` plugin path.

    Args:
        name_or_path: ``game24``, ``countdown``, ``math``, ``gsm8k`` (or a registered
            name), or ``package.module:ClassName``; a Task instance is returned as is.
        kwargs: passed to the class (e.g. ``num_numbers=5`` for countdown).
    Returns:
        The task instance.
    Raises:
        ValueError: for an unknown name (listing the valid ones), an unimportable plugin,
            or a plugin class that is neither a Task subclass nor satisfies the protocol.
    """
    if not isinstance(name_or_path, str):
        _check_task_class(type(name_or_path) if isinstance(name_or_path, Task) else name_or_path,
                          repr(name_or_path))
        return name_or_path
    if name_or_path in _REGISTERED:
        cls = _REGISTERED[name_or_path]
    elif name_or_path in _BUILTIN:
        cls = _import_object(_BUILTIN[name_or_path])
    elif ":" in name_or_path:
        cls = _import_object(name_or_path)
        _check_task_class(cls, repr(name_or_path))
    else:
        raise ValueError(f"unknown task {name_or_path!r}; valid: {', '.join(task_names())}, "
                         f"or a plugin as 'module:Class'")
    task = cls(**kwargs) if isinstance(cls, type) else cls
    if _missing_members(task):
        raise ValueError(f"task {name_or_path!r} made {task!r}, which lacks "
                         f"{', '.join(_missing_members(task))}")
    return task


def task_from_config(task_config: Any) -> Task:
    """The task a config's ``task`` section names (``name`` plus ``kwargs``).

    Raises:
        ValueError: unknown task name.
    """
    return get_task(task_config.name, **task_config.kwargs)
