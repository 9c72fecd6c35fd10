"""One turn of the data flywheel: fine-tune the embedded verifier on the engine's own search traces.

``ponder train-verifier --traces DIR`` reads the rows ``ponder export-traces`` wrote
(or the ``trees.jsonl`` of run directories), rebuilds every finished path whose
outcome the task verified, and gives each of its steps a target: by default the
step's *best descendant outcome* (1 if the search reached a right answer through
it, else 0), or with ``--target success_rate`` the share of right answers among
the finished paths through it. The verifier then continues training from its
current weights with the same optimizer loop and batcher as ``ponder train``
(``train.fit``, ``data.VerifierBatcher``). The generator is copied unchanged, so
``--out`` is a complete weights directory for the embedded backend.

Test puzzles never train anything: a row whose puzzle is in the test split
900-999 of 24.csv (by number multiset, as ``game24.is_test_puzzle`` decides) is
skipped and counted, and so is a row that is not a Game-of-24 puzzle at all.

Run as ``ponder train-verifier``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ponder.models import checkpoint
from ponder.tasks import game24

TARGETS = ("exact", "correct", "success_rate")  # which trace label becomes a step's target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flywheel options to ``parser``."""
    g = parser.add_argument_group("verifier fine-tuning on search traces")
    g.add_argument("--traces", required=True, metavar="DIR",
                   help="exported traces (traces.parquet / traces.jsonl) or run directories")
    g.add_argument("--from", dest="from_dir", default=str(checkpoint.WEIGHTS_DIR), metavar="DIR",
                   help="weights to start from (default: the shipped ones)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="where the new weights go (default: runs/flywheel-<timestamp>)")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default 300)")
    g.add_argument("--batch-size", type=int, default=64, help="paths per step (default 64)")
    g.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, cosine decay (default 5e-4; value head 1e-3)")
    g.add_argument("--target", choices=TARGETS + ("outcome",), default=None,
                   help="step target: exact (every expanded node's path, labelled by whether a right "
                        "answer is still reachable: ponder.models.exact_labels; the default), best "
                        "descendant outcome (correct), or success rate below the step; a value head "
                        "(--config) takes outcome (the path's verdict on every step; its default), "
                        "correct or success_rate")
    g.add_argument("--replay", type=int, default=8,
                   help="exact target: synthetic paths per train puzzle (all of them) mixed in, as ponder "
                        "train makes them, so the verifier keeps what it knew (0: traces only)")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    g.add_argument("--seed", type=int, default=0, help="seed of batching and init (default 0)")


def _numbers(problem: str) -> tuple[int, ...] | None:
    try:
        numbers = tuple(game24.parse_numbers(problem))
    except ValueError:
        return None
    return numbers if len(numbers) == 4 else None


def training_paths(rows: Iterable[dict[str, Any]], target: str = "correct"
                   ) -> tuple[list[tuple[tuple[int, ...], list[str], list[float]]], Counter]:
    """Paths of train puzzles from the traces, with one target per step.

    With ``target="exact"`` every expanded node's path is used (where the search went
    wrong matters most), each step labelled by ``exact_labels.exact_step_labels``; else
    only verified finished paths, labelled by the trace's outcome columns.

    Args:
        rows: exported trace rows (``ponder.engine.traces``).
        target: ``"correct"`` or ``"success_rate"``.

    Returns:
        ``(paths, counts)``: paths as ``(numbers, steps, targets)`` for
        ``data.VerifierBatcher``, unique per puzzle; counts of rows used and skipped
        (``test_split``, ``not_game24``, ``unlabelled``).

    Raises:
        ValueError: unknown ``target``.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    trees: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}  # (run, problem_id) -> node_id -> row
    counts: Counter = Counter()
    for row in rows:
        numbers = _numbers(row["problem"])
        if numbers is None:
            counts["not_game24"] += 1
        elif game24.is_test_puzzle(numbers):
            counts["test_split"] += 1  # never train on puzzles 900-999
        else:
            trees.setdefault((row.get("run") or "", row["problem_id"]), {})[row["node_id"]] = row
    if target == "exact":
        return _exact_paths(trees, counts), counts
    paths, seen = [], set()
    for nodes in trees.values():
        for row in nodes.values():
            if not row["terminal"]:
                continue
            if row[target] is None:
                counts["unlabelled"] += 1  # the task could not verify this answer
                continue
            chain = _chain(nodes, row)
            if chain is None or any(r[target] is None for r in chain):
                continue
            numbers = _numbers(row["problem"])
            steps = [r["step"] for r in chain]
            if (numbers, tuple(steps)) in seen:
                continue
            seen.add((numbers, tuple(steps)))
            paths.append((numbers, steps, [float(r[target]) for r in chain]))
            counts["paths"] += 1
    return paths, counts


def _exact_paths(trees: dict, counts: Counter) -> list:
    from ponder.models.exact_labels import exact_step_labels

    paths, seen = [], set()
    for nodes in trees.values():
        for row in nodes.values():
            chain = _chain(nodes, row)
            if chain is None:
                continue
            numbers = _numbers(row["problem"])
            steps = [r["step"] for r in chain]
            if (numbers, tuple(steps)) not in seen:
                seen.add((numbers, tuple(steps)))
                paths.append((numbers, steps, exact_step_labels(numbers, steps)))
                counts["paths"] += 1
    return paths


def with_replay(paths: list, num_replay: int, seed: int = 0, puzzles=None) -> list:
    """``paths`` plus ``num_replay`` synthetic exactly-labelled paths per train puzzle.

    Replay covers every train puzzle (``puzzles``, default: all of 24.csv outside the test
    split), not only the traced ones: fine-tuned on a hundred puzzles' traces alone, the
    verifier forgets what it knew of the other puzzles.
    """
    from ponder.models.exact_labels import labelled_paths

    if num_replay <= 0:
        return paths
    if puzzles is None:
        puzzles = [tuple(game24.parse_numbers(p.problem)) for p in game24.train_puzzles()]
    return paths + labelled_paths(puzzles, random.Random(seed), per_puzzle=num_replay)


def _chain(nodes: dict[int, dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Rows from the first step to ``row``; None if an ancestor is missing from the export."""
    chain = [row]
    while chain[-1]["parent_id"] != 0:
        parent = nodes.get(chain[-1]["parent_id"])
        if parent is None:
            return None
        chain.append(parent)
    return chain[::-1]


def fine_tune(paths, from_dir: str | Path, out_dir: str | Path, steps: int, batch_size: int,
              lr: float, seed: int = 0, info: dict[str, Any] | None = None) -> Path:
    """Continue training the verifier in ``from_dir`` on ``paths``; write both models to ``out_dir``.

    Returns:
        The new verifier's weights path.

    Raises:
        ValueError: no path fits the model's context. FileNotFoundError: no weights in ``from_dir``.
    """
    import torch

    from ponder.models.data import VerifierBatcher
    from ponder.models.train import fit

    torch.manual_seed(seed)
    model, tokenizer = checkpoint.load_verifier(from_dir)
    batcher = VerifierBatcher(paths, tokenizer, model.config.block_size)
    if not batcher.encoded:
        raise ValueError(f"none of the {len(paths)} trace paths fits the verifier's context "
                         f"of {model.config.block_size} tokens")
    rng = random.Random(seed)
    fit(model, lambda: batcher.batch(rng, batch_size), steps, lr, "flywheel")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):  # the generator is unchanged; keep the dir complete
        source = Path(from_dir) / f"{checkpoint.GENERATOR_NAME}{suffix}"
        if source.exists() and source.resolve() != (out / source.name).resolve():
            shutil.copyfile(source, out / source.name)
    previous = checkpoint.read_meta(from_dir, checkpoint.VERIFIER_NAME).get("info", {})
    return checkpoint.save_model(model, tokenizer, out, checkpoint.VERIFIER_NAME,
                                 {**previous, "flywheel": {**(info or {}), "from": str(from_dir),
                                                           "steps": steps, "lr": lr}})


def run(args: argparse.Namespace, rows: Iterable[dict[str, Any]]) -> int:
    """``ponder train-verifier``: fine-tune on trace rows, save; returns a process exit code.

    Args:
        args: the options ``add_arguments`` defines.
        rows: the trace rows read from ``args.traces`` (``ponder.engine.traces.read_traces``;
            the caller reads them, so that models/ does not import the engine).

    Raises:
        ValueError: the traces hold no verified path of a train puzzle.
    """
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    # None: left unset on the command line, which the value head's options share
    args.steps, args.lr = args.steps or 300, args.lr or 5e-4
    args.target = args.target or "exact"
    paths, counts = training_paths(rows, args.target)
    if counts["test_split"]:
        print(f"[flywheel] skipped {counts['test_split']} trace rows of test puzzles (900-999 of "
              f"24.csv): they are never trained on", flush=True)
    if counts["not_game24"]:
        print(f"[flywheel] skipped {counts['not_game24']} rows that are not Game-of-24 puzzles",
              flush=True)
    if not paths:
        raise ValueError(f"no verified finished path of a train puzzle in {args.traces} "
                         f"(skipped: {dict(counts)}); solve train puzzles (ids outside 900-999) "
                         f"and export their traces")
    positive = sum(t[-1] for _, _, t in paths) / len(paths)
    print(f"[flywheel] {len(paths)} paths from {len({p[0] for p in paths})} puzzles, "
          f"{positive:.1%} ending well", flush=True)
    if args.target == "exact":
        paths = with_replay(paths, args.replay, args.seed)
        print(f"[flywheel] {len(paths)} paths with {args.replay} replayed synthetic paths a train puzzle",
              flush=True)
    out = Path(args.out or Path("runs") / time.strftime("flywheel-%Y%m%d-%H%M%S"))
    weights = fine_tune(paths, args.from_dir, out, args.steps, args.batch_size, args.lr, args.seed,
                        {"traces": str(args.traces), "num_paths": len(paths), "target": args.target,
                         "replay_per_train_puzzle": args.replay if args.target == "exact" else 0})
    print(f"[flywheel] verifier saved to {weights} after {time.time() - start:.0f}s; use it with "
          f"--set verifier.model_path={out}", flush=True)
    return 0
