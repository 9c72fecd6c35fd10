"""The long-horizon subcommands of ``ponder``: serve, submit, status, result, cancel,
export-traces and train-verifier. ``ponder.cli`` adds them with ``add_commands``
and runs them with ``run``; each prints what a person needs and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from ponder.cluster.client import DEFAULT_STATE_DIR, PonderClient
from ponder.config import load_config
from ponder.engine.progress import format_flops
from ponder.engine.traces import export_traces, read_traces, read_tree_records
from ponder.tasks import get_task, load_problems

COMMANDS = ("serve", "submit", "status", "result", "cancel", "export-traces", "train-verifier")
TRAIN_VERIFIER_EPILOG = """\
examples:
  ponder train-verifier --traces runs/game24-train --out runs/flywheel
  ponder solve --config gsm8k_train.yaml --out runs/gsm8k-train   # task.kwargs.split: train
  ponder train-verifier --config gsm8k_train.yaml --traces runs/gsm8k-train --out runs/vhead

A value head is used by the hf verifier on the same model:
  verifier: {backend: hf, model_path: <the generator's>,
             kwargs: {gguf_file: <the generator's, if any>, value_head: runs/vhead}}"""


def add_commands(commands: Any, command: str | None) -> None:
    """Add the subcommands to ``commands`` (an argparse subparsers object).

    ``train-verifier``'s options import torch, so they are added only when
    ``command`` (the one being run) is ``train-verifier``.
    """
    state = dict(metavar="DIR", default=str(DEFAULT_STATE_DIR),
                 help=f"the engine's state directory (default {DEFAULT_STATE_DIR})")
    serve = commands.add_parser("serve", help="run the persistent engine (a detached Ray actor)",
                                description="Start the persistent engine. Without --address: a "
                                            "local Ray listening on 127.0.0.1 only, in the "
                                            "foreground until Ctrl-C. Ray's token is required "
                                            "either way (RAY_AUTH_MODE=token; clients read it "
                                            "from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                                            "~/.ray/auth_token). Unfinished jobs in the state "
                                            "dir resume.")
    serve.add_argument("--config", "-c", metavar="YAML", default=None,
                       help="engine config: models, replicas, default search and budget")
    serve.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override a config value (dotted key, YAML value); repeatable")
    serve.add_argument("--state-dir", **state)
    serve.add_argument("--address", default=None,
                       help="join this Ray cluster (host:port or auto; it must have token "
                            "auth on) and return; the actor stays there")
    serve.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    serve.add_argument("--checkpoint-every-s", type=float, default=30.0, metavar="S",
                       help="seconds between each job's checkpoints (default 30)")

    submit = commands.add_parser("submit", help="submit a file of problems to the engine",
                                 description="Submit problems as a job of the engine started by "
                                             "`ponder serve`; prints the job id.")
    submit.add_argument("file", metavar="FILE", help="JSONL of problems, or a 24.csv")
    submit.add_argument("--range", metavar="A:B", default=None, dest="range_",
                        help="only problems A..B-1 of the file (0-based)")
    submit.add_argument("--budget", type=float, default=None, metavar="FLOPS",
                        help="the job's FLOP cap (default: the engine config's)")
    submit.add_argument("--budget-per-problem", type=float, default=None, metavar="FLOPS",
                        help="each problem's FLOP cap (default: the engine config's)")
    submit.add_argument("--strategy", default=None,
                        help="search strategy, e.g. best_of_n, beam, mcts (default: the "
                             "engine config's)")
    submit.add_argument("--param", metavar="KEY=VALUE", action="append", default=[],
                        help="a search parameter (YAML value), repeatable")
    for name, help_ in (("status", "progress, FLOPs and best answers of a job (or all jobs)"),
                        ("result", "a finished job's summary and answers"),
                        ("cancel", "stop a job and free its reservations")):
        sub = commands.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        sub.add_argument("job_id", metavar="ID", nargs="?" if name == "status" else None,
                         help="the job id `ponder submit` printed" + (
                             " (default: list every job)" if name == "status" else ""))
        if name == "result":
            sub.add_argument("--wait", action="store_true", help="block until the job finishes")
    for sub in (submit, *(commands.choices[n] for n in ("status", "result", "cancel"))):
        sub.add_argument("--state-dir", **state)
        sub.add_argument("--address", default=None, help="the Ray cluster (default: from the state dir)")
        sub.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser("export-traces", help="search traces as JSONL + parquet",
                                 description="Flatten the trees.jsonl of run directories under "
                                             "DIR into traces.jsonl and traces.parquet.")
    export.add_argument("dirs", metavar="DIR", nargs="+",
                        help="run directories (or folders of them) holding trees.jsonl")
    export.add_argument("--out", default=None, metavar="DIR", help="default: the first DIR")

    train = commands.add_parser(
        "train-verifier", help="fine-tune the embedded verifier, or train an hf generator's value head, on traces",
        description="One turn of the data flywheel. Without --config: fine-tune the embedded "
                    "verifier on Game-of-24 traces (puzzles 900-999 are never trained on). With "
                    "--config CONFIG whose generator.backend is hf: train a value head on that "
                    "generator's hidden states at step ends, labelled by whether each finished "
                    "path's answer is right (traces of train problems only; test problems stop it).",
        epilog=TRAIN_VERIFIER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "train-verifier":
        from ponder.models.flywheel import add_arguments  # torch: ponder train-verifier only
        from ponder.models.head_train import add_arguments as add_head_arguments

        add_arguments(train)
        add_head_arguments(train)
    for sub in (serve, submit, export, train, *(commands.choices[n] for n in ("status", "result", "cancel"))):
        sub.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``args.command``; returns the exit status."""
    if args.command == "serve":
        from ponder.cluster.server import serve  # Ray: ponder serve only (server.py imports it)

        config = load_config(args.config, args.overrides)
        return serve(config, args.state_dir, args.address, args.checkpoint_every_s, args.num_cpus)
    if args.command == "export-traces":
        info = export_traces(args.dirs, args.out or args.dirs[0])
        print(f"{info['rows']} rows from {info['problems']} trees: {info['jsonl']} {info['parquet']}")
        return 0
    if args.command == "train-verifier" and args.config:
        from ponder.models.head_train import run as train_value_head

        return train_value_head(args, read_tree_records([args.traces]))
    if args.command == "train-verifier":
        from ponder.models.flywheel import run as train_verifier  # torch: train-verifier only

        return train_verifier(args, read_traces(args.traces))
    return _client_command(args)


def _client_command(args: argparse.Namespace) -> int:
    client = PonderClient(args.address, args.state_dir)
    if args.command == "submit":
        job_id = client.submit(_problems(client, args), args.budget, args.budget_per_problem,
                               args.strategy, _params(args.param) if args.param else None)
        print(job_id)
        return 0
    if args.command == "cancel":
        stopped = client.cancel(args.job_id)
        print(f"job {args.job_id}: {'cancelled' if stopped else 'not running'}")
        return 0
    if args.command == "result":
        out = client.result(args.job_id, wait=args.wait)
        if out is None:
            print(f"job {args.job_id} is still running (ponder status {args.job_id})", file=sys.stderr)
            return 1
    else:
        out = client.status(args.job_id)
    print(json.dumps(out, indent=2) if args.json else format_status(out))
    return 0


def _problems(client: Any, args: argparse.Namespace) -> list:
    task = get_task(client.ping()["task"])
    return load_problems(args.file, task, args.range_)


def _params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def format_status(out: dict[str, Any]) -> str:
    """A job status, a job result or the list of jobs, as lines for a terminal."""
    if "jobs" in out:
        lines = [f"{j['job_id']}  {j['state']:<9}  {j['num_finished'] or 0}/{j['num_problems']} finished  "
                 f"{format_flops(j['flops_spent'] or 0)} FLOPs" for j in out["jobs"]]
        return "\n".join(lines) or "no jobs"
    if "summary" in out:
        summary = out["summary"] or {}
        head = (f"job {out['job_id']}: {out['state']}, {summary.get('num_solved')}/"
                f"{summary.get('num_verifiable')} solved, {format_flops(summary.get('total_flops', 0))} FLOPs")
        rows = [f"  {r['id']}: {r['answer']!s}  ({r['stop_reason']}, correct={r['correct']})"
                for r in out["results"]]
        return "\n".join([head, *rows])
    head = (f"job {out['job_id']}: {out['state']}, {out['num_finished']}/{out['num_problems']} finished, "
            f"{format_flops(out['flops_spent'] or 0)} FLOPs spent")
    rows = [f"  {pid}: {b['answer']!s}  ({b['stop_reason']}, score={b['score']})"
            for pid, b in (out.get("best") or {}).items()]
    return "\n".join([head, *rows])
