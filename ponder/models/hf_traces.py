"""Finished paths of an hf generator's search trees, labelled by outcome, for a value head.

Read from the ``trees.jsonl`` of ``ponder solve`` run directories with the engine's
own readers (``ponder.engine.traces``): every finished path whose answer the task
verified becomes one ``TracePath``, its prompt and delimiter taken from the tree
record, so the head reads the text the generator continued. Each step's target is
one of (``TARGETS``):

- ``outcome``: the path's own verdict on every step (outcome supervision, as
  Math-Shepherd trains from final answers);
- ``correct``: the step's best descendant outcome (1 if some finished path through it
  is right), which differs from ``outcome`` where paths share a prefix;
- ``success_rate``: the share of right finished paths through the step (a soft target).

Test problems never train anything. A run whose ``config.yaml`` names
``task.kwargs.split: test``, or a tree whose problem text is in a test file
(``--test-problems``, by default GSM8K's test split shipped in ``ponder/tasks/data``),
stops the read with one line naming it: a head is chosen on train problems only.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from ponder.search.tree import NodeStatus, node_labels

TARGETS = ("outcome", "correct", "success_rate")
PACKAGED_TEST_FILES = (Path(__file__).resolve().parents[1] / "tasks" / "data" / "gsm8k" / "test.jsonl",)


@dataclass(slots=True)
class TracePath:
    """One finished path and a target for each of its steps.

    Attributes:
        problem_id, problem: the problem's key and text.
        prompt, delimiter: what the generator continued and its step delimiter.
        steps: the step texts. targets: one in [0, 1] per step.
        outcome: whether the path's answer was right. run: its run directory.
    """

    problem_id: str
    problem: str
    prompt: str
    delimiter: str
    steps: list[str]
    targets: list[float]
    outcome: bool
    run: str


def _normal(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=8)
def test_questions(path: str) -> frozenset[str]:
    """Whitespace-normalized problem texts of a test JSONL (``question`` or ``problem`` fields)."""
    questions = set()
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                questions.add(_normal(str(record.get("question", record.get("problem", "")))))
    return frozenset(questions)


def default_test_files() -> list[Path]:
    """The packaged test splits that exist in this install."""
    return [p for p in PACKAGED_TEST_FILES if p.is_file()]


def _run_split(run_dir: Path) -> str | None:
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    task = (yaml.safe_load(config.read_text()) or {}).get("task") or {}
    return (task.get("kwargs") or {}).get("split")


def check_train_only(records: list[tuple[Path, dict[str, Any]]], test_files: Iterable[str | Path]) -> None:
    """Refuse records of test problems.

    Args:
        records: ``(trees.jsonl path, tree record)`` pairs.
        test_files: JSONL files of test problems (their texts are never trained on).

    Raises:
        ValueError: one line naming the first offending run and problem, and how many.
    """
    test = frozenset().union(*(test_questions(str(p)) for p in test_files))
    bad = []  # (run, problem id, why)
    for path, record in records:
        split = _run_split(path.parent)
        if split == "test":
            bad.append((path.parent, record["problem_id"], "its run's task.kwargs.split is test"))
        elif _normal(record["problem"]) in test:
            bad.append((path.parent, record["problem_id"], "its text is a test problem"))
    if bad:
        run, problem_id, why = bad[0]
        raise ValueError(f"{len(bad)} traced problems are test problems, e.g. {problem_id!r} in "
                         f"{run} ({why}); train a value head only on traces of train problems")


def labelled_paths(records: list[tuple[Path, dict[str, Any]]], target: str = "outcome"
                   ) -> tuple[list[TracePath], Counter]:
    """Every verified finished path of the records, one target a step, unique per problem.

    Returns:
        ``(paths, counts)``: counts of ``paths``, ``unlabelled`` (a verdict the task did
        not know) and ``duplicate`` paths.

    Raises:
        ValueError: an unknown ``target``.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    paths, seen, counts = [], set(), Counter()
    for tree_file, record in records:
        nodes = record["nodes"]  # node_id -> [parent_id, text, score, status, answer, visits, value_sum]
        correct, rates = node_labels(record)
        label = {"outcome": None, "correct": correct, "success_rate": rates}[target]
        for leaf, node in enumerate(nodes):
            if node[3] != NodeStatus.TERMINAL:
                continue
            if correct[leaf] is None:
                counts["unlabelled"] += 1
                continue
            chain = [leaf]
            while nodes[chain[-1]][0] > 0:  # up to the first step; node 0 is the root
                chain.append(nodes[chain[-1]][0])
            chain.reverse()
            steps = [nodes[n][1] for n in chain]
            key = (_normal(record["problem"]), tuple(steps))
            if key in seen:
                counts["duplicate"] += 1
                continue
            seen.add(key)
            targets = [float(correct[leaf])] * len(chain) if label is None else [float(label[n]) for n in chain]
            paths.append(TracePath(str(record["problem_id"]), record["problem"], record["prompt"],
                                   record["delimiter"], steps, targets, bool(correct[leaf]),
                                   str(tree_file.parent)))
            counts["paths"] += 1
    return paths, counts
