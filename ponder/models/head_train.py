"""Train a value head on an hf generator's own traces: ``ponder train-verifier --config``.

The generator stays frozen. Each labelled finished path (``hf_traces``) is rendered
as the generator read it (``hidden_states.render_path``) and run through the model
once; the states at its step ends are cached and the head trains on them for all its
optimizer steps with BCE against the step targets. Problems are split (by problem,
so no held-out problem shares a prompt with training) into train and held-out train
problems; the head trains on the first and both are reported, with step-level and
path-level (last step's score against the outcome) AUC.

The head is saved to ``--out`` (``value_head.safetensors`` + ``value_head.json``) and
used by the hf verifier: ``verifier: {backend: hf, model_path: <generator's>,
kwargs: {gguf_file: <generator's, if any>, value_head: <out>}}``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ponder.models.hf_traces import TracePath, check_train_only, default_test_files, labelled_paths
from ponder.models.hidden_states import BaseModel, encode_path, load_base_model, step_states
from ponder.models.value_head import HeadMeta, ValueHead, save_head

DEFAULTS = {"steps": 300, "lr": 1e-3, "target": "outcome"}  # where the CLI leaves them unset


def path_states(base: BaseModel, paths: list[TracePath], layer: int = -1, batch_paths: int = 8,
                max_tokens: int | None = None) -> list[torch.Tensor | None]:
    """The ``(S, H)`` step-end states of each path, one forward pass a path.

    Paths longer than ``max_tokens`` tokens get None (they are left out of training).
    """
    encoded = [encode_path(base.tokenizer, p.prompt, p.steps, p.delimiter) for p in paths]
    states: list[torch.Tensor | None] = [None] * len(paths)
    order = sorted((i for i, (ids, _) in enumerate(encoded) if max_tokens is None or len(ids) <= max_tokens),
                   key=lambda i: len(encoded[i][0]))  # similar lengths share a batch: less padding
    for start in range(0, len(order), batch_paths):
        chunk = order[start:start + batch_paths]
        for i, s in zip(chunk, step_states(base.trunk, [encoded[i] for i in chunk],
                                           base.tokenizer.pad_token_id, layer)):
            states[i] = s
    return states


def split_problems(paths: list[TracePath], held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out paths, split by problem text."""
    problems = sorted({p.problem for p in paths})
    random.Random(seed).shuffle(problems)
    num_held = int(round(held_out * len(problems))) if len(problems) > 1 else 0
    held = set(problems[:num_held])
    train = [i for i, p in enumerate(paths) if p.problem not in held]
    return train, [i for i, p in enumerate(paths) if p.problem in held]


def auc(scores: list[float], labels: list[float]) -> float | None:
    """ROC AUC of scores against 0/1 labels (ties count half); None if one class is missing."""
    pos = [s for s, y in zip(scores, labels) if y >= 0.5]
    neg = [s for s, y in zip(scores, labels) if y < 0.5]
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over runs of equal scores
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(1 for k in range(i, j) if ranked[k][1]) * (i + j + 1) / 2
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def evaluate(head: ValueHead, states: list[torch.Tensor], paths: list[TracePath]) -> dict[str, Any]:
    """Loss and AUCs of ``head`` on cached states: per step, and last step against outcome."""
    if not paths:
        return {"num_paths": 0}
    with torch.no_grad():
        logits = head(torch.cat(states))  # (N,)
        targets = torch.tensor([t for p in paths for t in p.targets])  # (N,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).item()
    scores, last = logits.tolist(), []
    at = 0
    for s in states:
        at += len(s)
        last.append(scores[at - 1])
    return {"num_paths": len(paths), "num_steps": len(scores), "loss": round(loss, 4),
            "step_auc": auc(scores, targets.tolist()),
            "path_auc": auc(last, [float(p.outcome) for p in paths]),
            "positive_paths": round(sum(p.outcome for p in paths) / len(paths), 4)}


def fit_head(states: list[torch.Tensor], paths: list[TracePath], mlp_hidden: int = 0, steps: int = 300,
             batch_paths: int = 64, lr: float = 1e-3, seed: int = 0,
             on_step: Callable[[int, float], None] | None = None) -> tuple[ValueHead, list[float]]:
    """Train a head on cached states with BCE against the step targets.

    Args:
        states: ``(S_i, H)`` per path. paths: their targets.
        mlp_hidden: 0 for a linear head. steps: AdamW steps, cosine-decayed ``lr``.
        batch_paths: paths (all their steps) a step. seed: init and batching.
        on_step: called with (step, loss), for progress lines.

    Returns:
        The head (eval mode) and the loss of every step.

    Raises:
        ValueError: no path to train on.
    """
    if not paths:
        raise ValueError("no training path (every path was too long, or held out)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = ValueHead(states[0].shape[-1], mlp_hidden)
    head.fit_scaler(torch.cat(states))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    targets = [torch.tensor(p.targets) for p in paths]  # path -> (S,)
    losses = []
    head.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        pick = rng.sample(range(len(paths)), min(batch_paths, len(paths)))
        logits = head(torch.cat([states[i] for i in pick]))  # (N,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.cat([targets[i] for i in pick]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return head.eval(), losses


def train_head(base: BaseModel, paths: list[TracePath], out_dir: str | Path, *, layer: int = -1,
               mlp_hidden: int = 0, steps: int = 300, batch_paths: int = 64, lr: float = 1e-3,
               held_out: float = 0.2, seed: int = 0, max_tokens: int | None = None,
               info: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cache the states of ``paths``, train a head, evaluate it, save it to ``out_dir``.

    Returns:
        The ``training`` section saved in the head's JSON.

    Raises:
        ValueError: the paths use different step delimiters, or none can be trained on.
    """
    delimiters = {p.delimiter for p in paths}
    if len(delimiters) != 1:
        raise ValueError(f"traces use {len(delimiters)} step delimiters {sorted(delimiters)!r}; "
                         f"train one head per task")
    start = time.time()
    states = path_states(base, paths, layer, max_tokens=max_tokens)
    kept = [i for i, s in enumerate(states) if s is not None]
    log(f"[value-head] states of {len(kept)} paths cached in {time.time() - start:.0f}s "
        f"({len(paths) - len(kept)} longer than {max_tokens} tokens left out)")
    paths, states = [paths[i] for i in kept], [states[i] for i in kept]
    train, held = split_problems(paths, held_out, seed)
    every = max(steps // 5, 1)
    head, losses = fit_head([states[i] for i in train], [paths[i] for i in train], mlp_hidden, steps,
                            batch_paths, lr, seed,
                            lambda s, loss: log(f"[value-head] step {s + 1}/{steps} loss {loss:.4f}")
                            if (s + 1) % every == 0 else None)
    training = {**(info or {}), "steps": steps, "lr": lr, "batch_paths": batch_paths, "seed": seed,
                "held_out_share": held_out, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
                "train": evaluate(head, [states[i] for i in train], [paths[i] for i in train]),
                "held_out": evaluate(head, [states[i] for i in held], [paths[i] for i in held]),
                "seconds": round(time.time() - start, 1)}
    meta = HeadMeta(hidden_size=base.hidden_size, mlp_hidden=mlp_hidden, layer=layer,
                    delimiter=delimiters.pop(), base=base.fingerprint, training=training)
    save_head(head, meta, out_dir)
    return training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The value-head options of ``ponder train-verifier`` (used with ``--config``)."""
    g = parser.add_argument_group("value head for an hf generator (with --config)")
    g.add_argument("--config", "-c", metavar="YAML", default=None,
                   help="the config the traces were solved with; when its generator.backend is hf, "
                        "train a value head on the generator's hidden states instead of the "
                        "embedded verifier")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value (dotted key, YAML value); repeatable")
    g.add_argument("--layer", type=int, default=-1,
                   help="hidden state read: -1 the final one (default), k the k-th layer's output")
    g.add_argument("--mlp-hidden", type=int, default=0, metavar="N",
                   help="width of the head's hidden layer; 0 for a linear head (default)")
    g.add_argument("--held-out", type=float, default=0.2, metavar="SHARE",
                   help="share of train problems held out to report AUC on (default 0.2)")
    g.add_argument("--max-tokens", type=int, default=2048, metavar="N",
                   help="paths longer than this are left out (default 2048)")
    g.add_argument("--test-problems", metavar="JSONL", action="append", default=None,
                   help="test problems never to train on, refused by text (repeatable; default: "
                        "the GSM8K test split packaged in ponder/tasks/data, when installed)")


def run(args: argparse.Namespace, records: list[tuple[Path, dict[str, Any]]]) -> int:
    """``ponder train-verifier --config``: label the traces, cache states, train, save; an exit code.

    Args:
        args: the command's options.
        records: ``(trees.jsonl path, tree record)`` pairs (``ponder.engine.traces.read_tree_records``).

    Raises:
        ValueError: the generator is not hf, a test problem in the traces, no test file
            to check against, or no verified path.
    """
    from ponder.config import load_config

    config = load_config(args.config, args.overrides)
    gen = config.generator
    if gen.backend != "hf":
        raise ValueError(f"generator.backend is {gen.backend!r}: a value head reads an hf "
                         f"generator's states (for the embedded verifier leave out --config)")
    test_files = args.test_problems or default_test_files()
    if not test_files:
        raise ValueError("no test split to refuse traces against: pass --test-problems "
                         "PATH (e.g. GSM8K's test.jsonl)")
    torch.set_num_threads(args.threads)
    check_train_only(records, test_files)
    target = args.target or DEFAULTS["target"]
    paths, counts = labelled_paths(records, target)
    if not paths:
        raise ValueError(f"no verified finished path in {args.traces} ({dict(counts)})")
    right = sum(p.outcome for p in paths) / len(paths)
    print(f"[value-head] {len(paths)} paths of {len({p.problem for p in paths})} problems, "
          f"{right:.1%} right ({dict(counts)})", flush=True)
    if right in (0.0, 1.0):
        print("[value-head] warning: every path has the same outcome, so the head can only learn "
              "a constant; sample more paths a problem (search.params.n) or easier problems", flush=True)
    gguf_file = getattr(gen, "gguf_file", None) or gen.kwargs.get("gguf_file")
    base = load_base_model(gen.model_path, gguf_file, gen.kwargs.get("dtype", "float32"),
                           trust_remote_code=bool(gen.kwargs.get("trust_remote_code", False)))
    out = Path(args.out or Path("runs") / time.strftime("value-head-%Y%m%d-%H%M%S"))
    training = train_head(base, paths, out, layer=args.layer, mlp_hidden=args.mlp_hidden,
                          steps=args.steps or DEFAULTS["steps"], batch_paths=args.batch_size,
                          lr=args.lr or DEFAULTS["lr"], held_out=args.held_out, seed=args.seed,
                          max_tokens=args.max_tokens,
                          info={"traces": str(args.traces), "target": target,
                                "num_paths": len(paths), "generator": gen.model_path},
                          log=lambda line: print(line, flush=True))
    print(f"[value-head] saved to {out}: train {training['train']}, held out {training['held_out']}; "
          f"use it with verifier: {{backend: hf, model_path: {gen.model_path}, kwargs: {{"
          f"{'gguf_file: ' + gguf_file + ', ' if gguf_file else ''}value_head: {out}}}}}", flush=True)
    return 0
