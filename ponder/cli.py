"""The ``ponder`` command: argument parsing, and one call into the package that does the work.

``ponder solve`` runs a search job (``ponder.engine.solve``, also ``ponder.solve`` from Python),
``ponder train`` trains the embedded models, ``ponder sweep`` runs a grid (``ponder.sweep``);
serve, submit, status, result, cancel, export-traces and train-verifier are in ``ponder.commands``.

Errors a user can cause (a missing problems file, a bad config value, a malformed
JSONL line) print one line on stderr and exit with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ponder import __version__
from ponder.commands import add_commands  # serve, submit, ..., train-verifier
from ponder.commands import run as run_command
from ponder.config import ConfigError, load_config
from ponder.engine.progress import format_flops
from ponder.engine.rundir import resume_inputs
from ponder.engine.solve import default_out_dir, solve
from ponder.sweep.run import add_arguments as add_sweep_arguments
from ponder.sweep.run import run as run_sweep

EXIT_USAGE = 2  # bad input: config, problems file, arguments
EXIT_FAILED = 1  # the job itself failed (an actor died for good, a backend error)

SOLVE_EPILOG = """\
examples:
  ponder solve --config configs/game24.yaml --range 900:910
  ponder solve --config configs/game24_mcts.yaml --set budget.flops_per_problem=2e12
  ray job submit --working-dir . -- ponder solve --config configs/game24.yaml --range 900:1000 --out /abs/run

PATH is a JSONL file (one {"id": ..., "problem": ...} per line) or a ToT-style 24.csv.
Without --problems the config's task.problems is used, else the task's own data
(game24: the bundled 24.csv). Outputs: DIR/results.jsonl (one line per problem, written
as each finishes), DIR/summary.json and DIR/config.yaml. Under `ray job submit` give
--out an absolute path: the job runs in a temporary copy of the working dir."""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The argument parser; ``ponder train``'s options are added only when it is the command.

    (They come from ``ponder.models.train``, which imports torch; ``solve`` should not pay for it.)
    """
    parser = argparse.ArgumentParser(
        prog="ponder", description="Test-time compute engine: tree search over reasoning steps on Ray, "
                                   "under a FLOP budget.")
    parser.add_argument("--version", action="version", version=f"ponder {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    solve = commands.add_parser(
        "solve", help="solve a file of problems with the configured search and models",
        description="Solve problems with tree search, write results.jsonl and summary.json.",
        epilog=SOLVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    solve.add_argument("--config", "-c", metavar="YAML", default=None,
                       help="experiment config (default: built-in defaults, as in configs/game24.yaml)")
    solve.add_argument("--problems", "-p", metavar="PATH", default=None,
                       help="JSONL or 24.csv of problems (default: the task's data)")
    solve.add_argument("--range", metavar="A:B", default=None, dest="range_",
                       help="only problems A..B-1 of the file, by 0-based position (e.g. 900:1000)")
    solve.add_argument("--out", "-o", metavar="DIR", default=None,
                       help="run directory (default: output.dir, else runs/<timestamp>)")
    solve.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override a config value, dotted key, YAML value; repeatable "
                            "(e.g. --set search.strategy=mcts --set generator.num_replicas=2)")
    solve.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                       help="go on with the run in DIR (or --out) from its checkpoint: finished "
                            "problems are kept, unfinished ones continue where they were; its "
                            "config.yaml and problems are used unless given again")
    solve.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    solve.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")

    train = commands.add_parser(
        "train", help="train the embedded generator and verifier on Game-of-24 traces (CPU)",
        description="Train the embedded generator, sample rollouts, then train the verifier (PRM). "
                    "The test puzzles 900-999 of 24.csv are never trained on.")
    train.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    if _command(argv) == "train":
        from ponder.models.train import add_arguments  # torch: ponder train only

        add_arguments(train)
    sweep = commands.add_parser(
        "sweep", help="a grid of strategies x FLOP budgets: table, plot, frontier, power-law fit",
        description="Run every cell (strategy x budget x ...) of a sweep file as a `ponder solve` "
                    "job, skipping cells already finished in --out (resumable), then write "
                    "table.csv, table.parquet, the accuracy-vs-FLOPs plot with the compute-optimal "
                    "frontier, and the coverage power-law fit.")
    sweep.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_sweep_arguments(sweep)
    add_commands(commands, _command(argv))
    return parser


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _version() -> str:
    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ponder`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command == "solve":
            return solve_command(args)
        if args.command == "sweep":
            return run_sweep(args)
        if args.command != "train":
            return run_command(args)
        from ponder.models.train import run  # torch: ponder train only

        return run(args)
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- one line for users, the traceback with --debug
        if args.debug:
            raise
        code = EXIT_USAGE if _is_user_error(e) else EXIT_FAILED
        print(f"ponder {args.command}: error: {_one_line(e)}", file=sys.stderr)
        if code == EXIT_FAILED:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return code


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, (ConfigError, ValueError, OSError, KeyError, ImportError))


def _one_line(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.strerror}: {e.filename!r}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def solve_command(args: argparse.Namespace) -> int:
    """``ponder solve``: load config and problems, run the job, print where the results are."""
    config_path, problems = args.config, args.problems
    if isinstance(args.resume, str):  # --resume DIR: that run's config and problems by default
        args.out, config_path, problems = resume_inputs(args.resume, args.out, args.config,
                                                        args.problems, args.range_)
    config = load_config(config_path, args.overrides)
    if args.no_progress:
        config.output.progress = "off"
    if args.resume and not (args.out or config.output.dir):
        raise ValueError("--resume needs --out DIR (the run directory to go on with)")
    out_dir = Path(args.out or config.output.dir or default_out_dir())
    summary = solve(config, problems, out_dir, range_=args.range_, resume=bool(args.resume))
    print(format_summary(summary, out_dir))
    if summary.get("num_failed"):
        print(f"ponder solve: {summary['num_failed']} problems failed; see 'error' in "
              f"{out_dir / 'results.jsonl'}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def format_summary(summary: dict, out_dir: Path) -> str:
    """Two lines for the terminal: accuracy, FLOPs and time; where the files are."""
    if summary["accuracy"] is None:
        solved = f"{summary['num_problems']} problems (not verifiable by the task)"
    else:
        solved = (f"solved {summary['num_solved']}/{summary['num_verifiable']} "
                  f"({100 * summary['accuracy']:.1f}%)")
    return (f"{solved}, {format_flops(summary['total_flops'])} FLOPs, "
            f"{summary['wall_seconds']:.1f}s, strategy {summary['strategy']}\n"
            f"results: {out_dir / 'results.jsonl'}  summary: {out_dir / 'summary.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
