"""Search traces for the data flywheel: every expanded node of every tree and how it turned out.

While a job runs, each finished tree becomes one line of ``trees.jsonl`` in the
run directory (``TraceRecorder``): its nodes as compact rows plus the task's
verdict on every answer it reached. Nothing runs on the engine's hot path; a tree
is read once, when its problem finishes.

``export_traces`` flattens those trees into one row per node (the root excluded)
and writes ``traces.jsonl`` and ``traces.parquet``, which ``datasets`` loads with
``load_dataset("json" | "parquet", data_files=...)`` and pandas with
``read_json(lines=True)`` / ``read_parquet``. Columns (``ROW_SCHEMA``):

- ``problem_id``, ``problem``: the problem's key and text;
- ``prefix``: the text the step continues (prompt plus earlier steps, each ended
  by the step delimiter); ``step``: the step itself; ``depth``: 1 for a first step;
- ``step_score``: the verifier's score of the step, null if never scored;
- ``correct``: for a terminal node, ``task.verify`` of its answer; for a partial
  path, the *best descendant outcome*: true if some finished path below it is
  right, false if every finished path below it is wrong, null if none below it
  finished or the task cannot verify (so a partial path is labelled by what the
  search actually reached from it);
- ``success_rate``: the share of finished paths below (or at) the node that are
  right, null where ``correct`` is: a soft target, like Monte Carlo PRM labels;
- ``final_answer``, ``final_correct``: the answer the search returned for the
  problem and whether it was right (null if unknown), the same on every row of a tree;
- ``terminal``, ``answer``, ``visits``, ``value``, ``node_id``, ``parent_id``;
- ``model`` (the generator), ``verifier``, ``strategy``, ``run`` (the run directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ponder.engine.rundir import TREES_FILE, RunDir, read_jsonl, read_tree_file
from ponder.search.tree import NodeStatus, Tree, node_labels

EXPORT_JSONL = "traces.jsonl"
EXPORT_PARQUET = "traces.parquet"
ROW_SCHEMA: dict[str, str] = {  # column -> arrow type
    "problem_id": "string", "problem": "string", "prefix": "string", "step": "string",
    "step_score": "float64", "depth": "int64", "correct": "bool", "success_rate": "float64",
    "terminal": "bool", "answer": "string", "visits": "int64", "value": "float64",
    "node_id": "int64", "parent_id": "int64", "model": "string", "verifier": "string",
    "strategy": "string", "run": "string", "final_answer": "string", "final_correct": "bool",
}


def tree_record(tree: Tree, verify: Callable[[str | None], bool | None], *, problem: str,
                model: str, verifier: str, strategy: str, final_answer: str | None = None,
                final_correct: bool | None = None, generator_prompt: str | None = None) -> dict[str, Any]:
    """One ``trees.jsonl`` line for a finished tree.

    Args:
        tree: the problem's search tree.
        verify: answer -> True/False, or None if unknown (``task.verify`` bound to the problem).
        problem: the problem's text. model, verifier: model names. strategy: the search.
        final_answer, final_correct: the answer the search returned and its verdict.

    Returns:
        A JSON-able dict: the tree's nodes as ``[parent_id, text, score, status, answer,
        visits, value_sum]`` rows and ``verdicts``, answer -> right/wrong/unknown.
    """
    # One pass, no properties: the engine loop records a tree for every problem it finishes.
    terminal = NodeStatus.TERMINAL
    nodes = []
    verdicts: dict[str, bool | None] = {}  # answer text -> task's verdict
    terminal_none = None
    for node in tree.nodes:
        scores, status, answer = node.scores, node.status, node.answer
        nodes.append([node.parent_id, node.text, scores[-1] if scores else None, int(status),
                      answer, node.visits, node.value_sum])
        if status == terminal:
            if answer is None:
                terminal_none = verify(None)
            elif answer not in verdicts:
                verdicts[answer] = verify(answer)
    return {"problem_id": tree.problem_id, "problem": problem, "prompt": tree.prompt,
            "delimiter": tree.delimiter, "model": model, "verifier": verifier, "strategy": strategy,
            "nodes": nodes, "verdicts": verdicts, "no_answer_verdict": terminal_none,
            "final_answer": final_answer, "final_correct": final_correct,
            "generator_prompt": generator_prompt}


def record_rows(record: dict[str, Any], run: str = "") -> Iterator[dict[str, Any]]:
    """The export rows of one tree record, one per node, root excluded, in node order."""
    nodes, delimiter = record["nodes"], record["delimiter"]
    correct, rates = node_labels(record)
    prefixes = [record["prompt"]]  # node_id -> text that its children continue
    depths = [0]  # node_id -> depth
    for node_id, (parent_id, text, score, status, answer, visits, value_sum) in enumerate(nodes):
        if parent_id < 0:
            continue
        prefixes.append(prefixes[parent_id] + text + delimiter)
        depths.append(depths[parent_id] + 1)
        yield {
            "problem_id": record["problem_id"], "problem": record["problem"],
            "prefix": prefixes[parent_id], "step": text, "step_score": score,
            "depth": depths[node_id], "correct": correct[node_id],
            "success_rate": rates[node_id], "terminal": status == NodeStatus.TERMINAL,
            "answer": answer, "visits": visits, "value": value_sum / visits if visits else None,
            "node_id": node_id, "parent_id": parent_id, "model": record["model"],
            "verifier": record["verifier"], "strategy": record["strategy"], "run": run,
            "final_answer": record.get("final_answer"), "final_correct": record.get("final_correct"),
        }


class TraceRecorder:
    """Appends each finished tree to ``out_dir/trees.jsonl``, flushed as it is written.

    Args:
        out_dir: the run directory (a path or a RunDir).
        model, verifier: names of the generator and verifier models.
        strategy: the search strategy's name.
    """

    def __init__(self, out_dir: str | os.PathLike | RunDir, model: str, verifier: str, strategy: str):
        run_dir = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)
        self.path = run_dir.trees_path
        self.model, self.verifier, self.strategy = model, verifier, strategy
        self.num_trees = 0
        self._file = run_dir.open_trees()

    def record(self, tree: Tree, problem: str, verify: Callable[[str | None], bool | None],
               final_answer: str | None = None, final_correct: bool | None = None,
               generator_prompt: str | None = None) -> None:
        """Write ``tree`` (finished) with the verdicts ``verify`` gives its answers, and the
        answer the search returned with its verdict."""
        line = tree_record(tree, verify, problem=problem, model=self.model,
                           verifier=self.verifier, strategy=self.strategy,
                           final_answer=final_answer, final_correct=final_correct,
                           generator_prompt=generator_prompt)
        self._file.write(line)
        self.num_trees += 1

    def close(self) -> None:
        self._file.close()


def find_tree_files(root: str | os.PathLike) -> list[Path]:
    """Every ``trees.jsonl`` at or under ``root`` (a run directory or a folder of them)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob(TREES_FILE))


def read_tree_records(roots: Iterable[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """``(trees.jsonl path, record)`` for every tree under ``roots``.

    Raises:
        FileNotFoundError: no ``trees.jsonl`` under any root.
    """
    roots = [Path(r) for r in roots]
    files = [f for r in roots for f in find_tree_files(r)]
    if not files:
        raise FileNotFoundError(f"no {TREES_FILE} under {', '.join(map(str, roots))}; run "
                                f"`ponder solve` first")
    return [(f, record) for f in files for record in read_tree_file(f)]


def iter_rows(roots: Iterable[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """Rows of every tree under ``roots``; ``run`` is each tree file's directory."""
    for root in roots:
        for path in find_tree_files(root):
            for record in read_tree_file(path):
                yield from record_rows(record, run=str(path.parent))


def export_traces(roots: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``traces.jsonl`` and ``traces.parquet`` to ``out_dir`` from the trees under ``roots``.

    Returns:
        ``{"rows": ..., "problems": ..., "jsonl": path, "parquet": path}``.

    Raises:
        FileNotFoundError: no ``trees.jsonl`` under any root.
    """
    roots = [Path(r) for r in roots]
    if not any(find_tree_files(r) for r in roots):
        raise FileNotFoundError(f"no {TREES_FILE} under {', '.join(map(str, roots))}; run "
                                f"`ponder solve` first (it records the trees of finished problems)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(iter_rows(roots))
    jsonl = out / EXPORT_JSONL
    with open(jsonl, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    parquet = out / EXPORT_PARQUET
    write_parquet(rows, parquet)
    return {"rows": len(rows), "problems": len({(r["run"], r["problem_id"]) for r in rows}),
            "jsonl": str(jsonl), "parquet": str(parquet)}


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as a parquet file with the fixed ``ROW_SCHEMA`` (so all-null columns keep a type)."""
    import pyarrow as pa  # pyarrow: a heavy import, only for writing parquet
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in ROW_SCHEMA.items()])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def read_traces(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Exported rows from ``traces.parquet`` / ``traces.jsonl``, or a folder holding either,
    or a folder of run directories with ``trees.jsonl`` (flattened on the fly).

    Raises:
        FileNotFoundError: nothing readable at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        for name in (EXPORT_PARQUET, EXPORT_JSONL):
            if (path / name).is_file():
                return read_traces(path / name)
        if find_tree_files(path):
            return list(iter_rows([path]))
        raise FileNotFoundError(f"no {EXPORT_PARQUET}, {EXPORT_JSONL} or {TREES_FILE} in {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # pyarrow: a heavy import, only for reading parquet

        return pq.read_table(path).to_pylist()
    if path.name == TREES_FILE:
        return list(iter_rows([path]))
    return read_jsonl(path)
