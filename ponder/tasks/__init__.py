"""Tasks: how problems are posed, split into steps, answered and checked.

Built in: ``game24``, ``countdown``, ``math``, ``gsm8k``; plugins as ``module:Class``.
"""

from ponder.tasks.base import Problem, Task
from ponder.tasks.loader import job_problems, load_problems, parse_range
from ponder.tasks.registry import get_task, register_task, task_from_config, task_names

__all__ = ["Problem", "Task", "get_task", "job_problems", "load_problems", "parse_range",
           "register_task", "task_from_config", "task_names"]
