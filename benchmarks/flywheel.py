"""One turn of the data flywheel, measured: test-split solve rate before and after.

Procedure (every step is a ponder command, so a user can repeat it by hand):
1. ``ponder solve`` train puzzles (default rows 0-299 of 24.csv; never 900-999) with
   the current embedded models: the engine records every finished tree in
   ``trees.jsonl``.
2. ``ponder export-traces`` flattens them into ``traces.jsonl`` / ``traces.parquet``.
3. ``ponder train-verifier --traces ...`` fine-tunes the verifier on those traces
   (test puzzles are refused), writing a full weights dir.
4. ``ponder solve`` the test puzzles 900-999 at a fixed FLOP budget per problem,
   once with the starting weights, once with the new verifier; same strategy,
   seed and budget. The report is the two solve rates and the FLOPs they spent.

Usage:
    python benchmarks/flywheel.py --out runs/flywheel-bench
    python benchmarks/flywheel.py --train-range 0:100 --test-range 900:920 --steps 100  # quick
    python benchmarks/flywheel.py --weights DIR --set ray.mode=inprocess   # other weights, no Ray

Results go to ``OUT/report.json`` and ``OUT/report.md`` (paste the table into
/work/notes/flywheel_bench.md or the README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ponder(*args: str) -> None:
    """Run one ponder command; stop the benchmark if it fails."""
    command = [sys.executable, "-m", "ponder.cli", *args]
    print("$ ponder " + " ".join(args), flush=True)
    start = time.time()
    subprocess.run(command, cwd=REPO, check=True)
    print(f"  ({time.time() - start:.0f}s)", flush=True)


def solve(out: Path, range_: str, common: list[str], verifier_path: str | None = None) -> dict:
    extra = ["--set", f"verifier.model_path={verifier_path}"] if verifier_path else []
    ponder("solve", "--range", range_, "--out", str(out), "--no-progress", *common, *extra)
    return json.loads((out / "summary.json").read_text())


def check_ranges(train: str, test: str) -> None:
    start, stop = (int(x) for x in train.split(":"))
    if start < 1000 and stop > 900:
        raise SystemExit(f"--train-range {train} overlaps the test split 900-999")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/flywheel-bench")
    parser.add_argument("--config", default=str(REPO / "configs" / "game24.yaml"))
    parser.add_argument("--train-range", default="0:300", help="24.csv rows solved for traces")
    parser.add_argument("--test-range", default="900:1000", help="rows measured before and after")
    parser.add_argument("--budget", default="5e10", help="FLOPs per problem, every solve")
    parser.add_argument("--weights", default=None, metavar="DIR",
                        help="starting generator + verifier (default: the shipped weights)")
    parser.add_argument("--steps", type=int, default=300, help="verifier fine-tuning steps")
    parser.add_argument("--before", default=None, metavar="RUN_DIR",
                        help="reuse this finished solve of --test-range with the starting weights and the "
                             "same settings as the 'before' figure instead of solving it again")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="extra config overrides for every solve (KEY=VALUE)")
    args = parser.parse_args(argv)
    check_ranges(args.train_range, args.test_range)
    out = Path(args.out).resolve()
    common = ["--config", args.config, "--set", f"budget.flops_per_problem={args.budget}"]
    start = []
    if args.weights:
        weights = str(Path(args.weights).resolve())
        common += ["--set", f"generator.model_path={weights}", "--set", f"verifier.model_path={weights}"]
        start = ["--from", weights]
    for override in args.overrides:
        common += ["--set", override]

    train = solve(out / "train", args.train_range, common)
    ponder("export-traces", str(out / "train"), "--out", str(out / "traces"))
    ponder("train-verifier", "--traces", str(out / "traces"), "--out", str(out / "weights"),
           "--steps", str(args.steps), *start)
    if args.before:
        before = json.loads((Path(args.before) / "summary.json").read_text())
        print(f"  before: {args.before} ({before['num_solved']}/{before['num_verifiable']})", flush=True)
    else:
        before = solve(out / "test_before", args.test_range, common)
    after = solve(out / "test_after", args.test_range, common, verifier_path=str(out / "weights"))

    report = {"train_range": args.train_range, "test_range": args.test_range,
              "flops_per_problem": float(args.budget), "steps": args.steps,
              "weights": args.weights or "shipped",
              "train_solve_rate": train["accuracy"],
              "before": {k: before[k] for k in ("accuracy", "num_solved", "num_verifiable", "total_flops")},
              "after": {k: after[k] for k in ("accuracy", "num_solved", "num_verifiable", "total_flops")},
              "strategy": before["strategy"]}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = (f"| verifier | solved ({args.test_range}) | solve rate | total FLOPs |\n|---|---|---|---|\n"
             f"| shipped | {before['num_solved']}/{before['num_verifiable']} | "
             f"{before['accuracy']:.1%} | {before['total_flops']:.3g} |\n"
             f"| after one flywheel round | {after['num_solved']}/{after['num_verifiable']} | "
             f"{after['accuracy']:.1%} | {after['total_flops']:.3g} |\n")
    (out / "report.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
