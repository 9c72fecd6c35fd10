"""Where a Game-of-24 run's unsolved paths first went wrong, replayed with the exact checker and solver.

    python benchmarks/failure_replay.py RUN_DIR      # a `ponder solve` output dir (results + trees)

For every unsolved problem, the chosen trace is walked step by step: the first step
that is wrong (``game24.check_step``: arithmetic, operands, ``left:`` list, answer line)
or that leaves numbers which cannot make 24 (``exact_labels.can_make_24``) names the
failure, as ``invalid@D`` / ``deadend@D`` (D: 0-based depth) or ``invalid@D (answer)``.
Also printed per problem: how many expanded nodes at each depth were still good, so a
verifier failure (good nodes existed) reads apart from a generator one (none did).
Ends with one JSON line of the counts.
"""

import json
import sys
from collections import Counter
from pathlib import Path

from ponder.models.exact_labels import can_make_24, step_verdicts
from ponder.tasks import game24
from ponder.tasks.arith_check import left_of


def first_failure(numbers, trace) -> str:
    for depth, step in enumerate(trace):
        if not game24.check_step(numbers, trace[:depth + 1]):
            return f"invalid@{depth}" + (" (answer)" if game24.is_terminal(step) else "")
        if not game24.is_terminal(step) and not can_make_24(left_of(step)):
            return f"deadend@{depth}"
    return "other"


def main(run_dir: Path) -> None:
    results = {}
    with open(run_dir / "results.jsonl") as f:
        for line in f:
            row = json.loads(line)
            results[row["id"]] = row
    kinds = Counter()
    with open(run_dir / "trees.jsonl") as f:
        for line in f:
            tree = json.loads(line)
            result = results.get(tree["problem_id"])
            if result is None or result["correct"]:
                continue
            numbers = tuple(game24.parse_numbers(tree["problem"]))
            paths, good_at = {0: []}, Counter()  # node_id -> steps; depth -> good nodes
            for node_id, (parent_id, text, *_rest) in enumerate(tree["nodes"]):
                if parent_id < 0:
                    continue
                paths[node_id] = paths[parent_id] + [text]
                good_at[len(paths[node_id])] += step_verdicts(numbers, paths[node_id])[-1] == 1.0
            kind = first_failure(numbers, result["trace"])
            kinds[kind] += 1
            print(f"{tree['problem_id']:>5} {tree['problem']:<12} {kind:<20} good nodes by depth "
                  f"{dict(sorted(good_at.items()))}")
    print(json.dumps({"benchmark": "failure_replay", "run": str(run_dir), "unsolved": sum(kinds.values()),
                      "first_failure": dict(kinds.most_common())}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
