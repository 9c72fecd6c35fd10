"""The run directory: the one place that names, writes and reads what a job leaves on disk.

    config.yaml        the validated config that produced the run
    problems.jsonl     the job's problems, so that resuming needs only the directory
    results.jsonl      one line per problem, written and flushed the moment it finishes
    trees.jsonl        one finished search tree per line (``ponder.engine.traces``)
    summary.json       totals at the end
    checkpoint.ponder  every active tree and the FLOP ledger (format: ``ponder.engine.checkpoint``)

A killed run can leave a partial last line in a JSONL file that grows (results,
trees); every reader here skips it (``read_jsonl``), and a bad line anywhere else
is an error naming it. The files written whole (config, problems, summary) go
through a temporary file and a rename, so they are never partial; the checkpoint
does the same and checks a CRC besides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from ponder.engine.checkpoint import JobState, RequestIds, load_job, save_job
from ponder.engine.results import ProblemRecord, RunTotals
from ponder.tasks.base import Problem

CONFIG_FILE = "config.yaml"
PROBLEMS_FILE = "problems.jsonl"
RESULTS_FILE = "results.jsonl"
TREES_FILE = "trees.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.ponder"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; a torn last line (a crash mid-write) is skipped.

    Raises:
        FileNotFoundError: no such file. ValueError: a bad line other than the last.
    """
    with open(path) as f:
        lines = f.readlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == last:
                break  # the line being written when the process died
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
    return rows


class JsonlAppender:
    """A JSONL file open for appending; every line is flushed as it is written."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a")

    def write(self, line: dict[str, Any]) -> None:
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultsFile(JsonlAppender):
    """``results.jsonl`` being written, with the running totals of its lines."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.totals = RunTotals()

    def write(self, record: ProblemRecord) -> dict[str, Any]:  # type: ignore[override]
        """Append one finished problem's line and flush it; returns the line."""
        line = record.to_dict()
        self.totals.add(record)
        super().write(line)
        return line


class RunDir:
    """A run directory: its files' paths, their writers and their readers.

    Args:
        path: the directory (created by the writers, not by this constructor).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG_FILE)
    problems_path = property(lambda self: self.path / PROBLEMS_FILE)
    results_path = property(lambda self: self.path / RESULTS_FILE)
    trees_path = property(lambda self: self.path / TREES_FILE)
    summary_path = property(lambda self: self.path / SUMMARY_FILE)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT_FILE)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- writers ------------------------------------------------------------------------

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict[str, Any]) -> Path:
        return self._replace(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def write_problems(self, problems: Iterable[Problem]) -> Path:
        """Write the job's problems (atomically), so a resume needs only the directory."""
        lines = [{"id": p.problem_id, "problem": p.problem, "reference": p.reference} for p in problems]
        return self._replace(self.problems_path, "".join(json.dumps(line) + "\n" for line in lines))

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return self._replace(self.summary_path, json.dumps(summary, indent=2) + "\n")

    def open_results(self, lines: Iterable[dict[str, Any]] = ()) -> ResultsFile:
        """Start ``results.jsonl`` over with ``lines`` (finished before a resume), open to append.

        The rewrite goes through a temporary file, so a crash now leaves the old file whole.
        """
        lines = list(lines)
        self._replace(self.results_path, "".join(json.dumps(line) + "\n" for line in lines))
        results = ResultsFile(self.results_path)
        for line in lines:
            results.totals.add(ProblemRecord.from_dict(line))
        return results

    def open_trees(self) -> JsonlAppender:
        """``trees.jsonl`` open to append (a resumed run adds to what is there)."""
        return JsonlAppender(self.create().trees_path)

    def _replace(self, path: Path, text: str) -> Path:
        self.create()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    # -- readers ------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any] | None:
        """``config.yaml`` as a dict; None if there is none."""
        if not self.config_path.is_file():
            return None
        return yaml.safe_load(self.config_path.read_text()) or {}

    def read_problems(self) -> list[Problem]:
        """The problems the job was started with.

        Raises:
            FileNotFoundError: the directory holds no job (the message says what to pass instead).
        """
        if not self.problems_path.is_file():
            raise FileNotFoundError(f"{self.problems_path} not found: {self.path} holds no job to "
                                    f"resume; pass the problems (--problems / --range) as in the first run")
        return [Problem(str(r["id"]), r["problem"], r.get("reference"))
                for r in read_jsonl(self.problems_path)]

    def read_results(self) -> list[dict[str, Any]]:
        """The lines of ``results.jsonl`` in the order problems finished; [] if there is none."""
        return read_jsonl(self.results_path) if self.results_path.is_file() else []

    def read_finished(self) -> dict[str, dict[str, Any]]:
        """problem id -> its ``results.jsonl`` line (the last, if one appears twice)."""
        return {str(line["id"]): line for line in self.read_results()}

    def read_trees(self) -> list[dict[str, Any]]:
        """The tree records of ``trees.jsonl``, the last one kept per problem id ([] if none).

        A problem searched again after a resume has two lines.
        """
        return read_tree_file(self.trees_path) if self.trees_path.is_file() else []

    def save_checkpoint(self, state: JobState, task: Any) -> int:
        """Write the job's checkpoint (atomically); returns its size in bytes."""
        return save_job(self.create().checkpoint_path, state, task)

    def load_checkpoint(self, task: Any, finished: dict[str, dict[str, Any]],
                        request_ids: RequestIds | None = None) -> JobState:
        """The job as its checkpoint left it, with ``finished`` problems (results lines) taken as done.

        Raises:
            PonderCheckpointError: the checkpoint is unusable.
        """
        return load_job(self.checkpoint_path, task, finished, request_ids)

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``; None if the run has not written one (it is still going, or died)."""
        if not self.summary_path.is_file():
            return None
        return json.loads(self.summary_path.read_text())


def read_tree_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The tree records of one ``trees.jsonl`` file, the last one kept per problem id."""
    latest: dict[str, dict[str, Any]] = {}  # problem_id -> last record
    for record in read_jsonl(path):
        latest[record["problem_id"]] = record
    return list(latest.values())


def read_results(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """``RunDir(run_dir).read_results()``: the lines of a run's ``results.jsonl``."""
    return RunDir(run_dir).read_results()


def resume_inputs(run_dir: str | os.PathLike, out: str | None, config: str | None,
                  problems: object, range_: str | None) -> tuple[str, str | None, object]:
    """What ``ponder solve --resume DIR`` runs: ``(out dir, config path, problems)``.

    The run's own ``config.yaml`` unless ``--config`` is given, and its
    ``problems.jsonl`` unless ``--problems`` or ``--range`` is.

    Raises:
        ValueError: ``--out`` names another directory. FileNotFoundError: DIR holds no run.
    """
    run = RunDir(run_dir)
    if out is not None and Path(out).resolve() != run.path.resolve():
        raise ValueError(f"--resume {run.path} and --out {out} name different run directories")
    if not run.path.is_dir():
        raise FileNotFoundError(f"--resume {run.path}: no such run directory")
    if config is None and run.config_path.is_file():
        config = str(run.config_path)
    if problems is None and range_ is None:
        problems = run.read_problems()
    return str(run.path), config, problems
