"""``ponder train``: train the embedded generator, then the verifier, from scratch on CPU.

1. Generator: next-token loss on step-by-step solutions of the Game-of-24 train
   puzzles (every puzzle of 24.csv except the test split 900-999).
2. Verifier data: the trained generator samples next steps from states of the train
   puzzles; with random valid walks, solutions and near-miss mistakes, every step is
   labelled exactly (``--labels exact``, ``ponder.models.exact_labels``: good if a
   right answer is still reachable). ``--labels outcome`` instead samples whole
   rollouts and labels each step by the success rate of the rollouts through it.
3. Verifier: a PRM initialised from the generator's trunk, fitted to those labels.
The weights and their json configs go to ``--out`` (default: the shipped weights dir).

Run as ``ponder train`` or ``python -m ponder.models.train``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from ponder.models import checkpoint, exact_labels
from ponder.models.data import GeneratorBatcher, VerifierBatcher, generator_texts, step_targets
from ponder.models.gpt import GPT, GPTConfig
from ponder.models.rollouts import collect_rollouts, collect_step_samples, load_rollouts, save_rollouts
from ponder.models.tokenizer import DEFAULT_ALPHABET, CharTokenizer
from ponder.models.verifier import ProcessRewardModel
from ponder.tasks import game24

DEV_SPLIT = (range(800, 900), range(1000, 1100))  # held out by --dev, for tuning without the test split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training options to ``parser`` (``ponder train`` and ``python -m``)."""
    g = parser.add_argument_group("embedded model training")
    g.add_argument("--out", default=str(checkpoint.WEIGHTS_DIR), help="where the weights go")
    g.add_argument("--data", default=None, help="24.csv (default: the bundled Game-of-24 data)")
    g.add_argument("--gen-steps", type=int, default=1600, help="generator optimizer steps")
    g.add_argument("--ver-steps", type=int, default=1200, help="verifier optimizer steps")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    g.add_argument("--n-layer", type=int, default=4)
    g.add_argument("--n-head", type=int, default=4)
    g.add_argument("--n-embd", type=int, default=128)
    g.add_argument("--random-fraction", type=float, default=0.5,
                   help="share of generator rows that are random valid walks, trained on step results only")
    g.add_argument("--labels", choices=("exact", "outcome"), default="exact",
                   help="verifier step targets: exact (a right answer is still reachable, from the task's "
                        "solver: ponder.models.exact_labels) or outcome (success rate of the generator's rollouts)")
    g.add_argument("--synthetic", type=int, default=24,
                   help="exact labels: synthetic paths per train puzzle (random walks, solutions, near misses)")
    g.add_argument("--step-samples", type=int, default=0,
                   help="exact labels: the generator's sampled next steps per state (4 states a train puzzle: "
                        "the prompt, random 1- and 2-step starts, a solution's 3 steps); 0: none, as for the "
                        "shipped weights (each costs a generator call per state)")
    g.add_argument("--rollouts", type=int, default=None,
                   help="verifier rollouts per train puzzle (default: 8 with outcome labels, 0 with exact)")
    g.add_argument("--random-prefixes", type=int, default=4,
                   help="per train puzzle: random valid 1-2 step starts the generator continues")
    g.add_argument("--prefix-rollouts", type=int, default=2, help="continuations of each random start")
    g.add_argument("--corrupt", type=int, default=0,
                   help="per train puzzle: paths with one near-miss mistake, continued by the generator "
                        "(0: off, as for the shipped weights)")
    g.add_argument("--rollout-temperature", type=float, default=1.0)
    g.add_argument("--rollouts-file", default=None, metavar="JSONL",
                   help="reuse the verifier's rollouts from this file if it exists, else save them there")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dev", action="store_true",
                   help="also hold out puzzles 800-899 and 1000-1099 (for tuning; never the test split)")
    g.add_argument("--max-puzzles", type=int, default=0, help="use only the first N train puzzles (0 = all)")
    g.add_argument("--skip-generator", action="store_true",
                   help="reuse the generator already in --out; train only the verifier")


def train_puzzles(args) -> list[tuple[int, ...]]:
    """Train puzzles for this run: 24.csv minus the test split (minus the dev split with --dev)."""
    puzzles = [tuple(game24.parse_numbers(p.problem)) for p in game24.train_puzzles(args.data)]
    if args.dev:
        dev = {game24_key(p) for p in dev_puzzles(args.data)}
        puzzles = [p for p in puzzles if game24_key(p) not in dev]
    for p in puzzles:
        assert not game24.is_test_puzzle(p), f"test puzzle {p} in training data"
    return puzzles[:args.max_puzzles] if args.max_puzzles > 0 else puzzles


def dev_puzzles(path=None) -> list[tuple[int, ...]]:
    """Puzzles 800-899 and 1000-1099: the tuning split used by --dev runs."""
    everything = game24.load_puzzles(path)
    return [tuple(game24.parse_numbers(everything[i].problem)) for split in DEV_SPLIT for i in split]


def game24_key(numbers) -> tuple[int, ...]:
    return tuple(sorted(numbers))


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def fit(model, next_batch, steps: int, peak_lr: float, label: str, log_every: int = 50) -> None:
    """The optimizer loop both models share: AdamW, warmup + cosine, clipped gradients."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr, betas=(0.9, 0.99))
    model.train()
    start, smooth = time.time(), None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr)
        loss = model(*next_batch())[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            rate = (step + 1) / (time.time() - start)
            print(f"[{label}] step {step + 1}/{steps} loss {smooth:.4f} "
                  f"{rate:.2f} steps/s eta {(steps - step - 1) / rate:.0f}s", flush=True)
    model.eval()


def train_generator(args, puzzles) -> tuple[GPT, CharTokenizer]:
    rng = random.Random(args.seed)
    examples = generator_texts(puzzles)
    tokenizer = CharTokenizer(DEFAULT_ALPHABET)
    print(f"[generator] {len(examples)} train puzzles, "
          f"{sum(len(t) for _, t in examples)} solutions", flush=True)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config)
    batcher = GeneratorBatcher(examples, tokenizer, args.random_fraction)
    fit(model, lambda: batcher.batch(rng, args.batch_size), args.gen_steps, args.lr, "generator")
    return model, tokenizer


def train_verifier(args, generator: GPT, tokenizer: CharTokenizer, puzzles) -> ProcessRewardModel:
    rng = random.Random(args.seed + 1)
    paths = verifier_paths(args, generator, tokenizer, puzzles, rng)
    batcher = VerifierBatcher(paths, tokenizer, generator.config.block_size)
    model = ProcessRewardModel.from_generator(generator)
    fit(model, lambda: batcher.batch(rng, args.batch_size), args.ver_steps, args.lr / 2, "verifier")
    return model


def num_rollouts(args) -> int:
    if args.rollouts is not None:
        return args.rollouts
    return 8 if args.labels == "outcome" else 0


def verifier_paths(args, generator: GPT, tokenizer: CharTokenizer, puzzles, rng: random.Random) -> list:
    """The verifier's training paths, each with a target per step (see ``--labels``)."""
    rollouts = verifier_rollouts(args, generator, tokenizer, puzzles) if num_rollouts(args) > 0 else []
    if args.labels == "outcome":
        return step_targets(rollouts)
    start = time.time()
    sampled = [(r.numbers, r.steps) for r in rollouts]
    if args.step_samples > 0:
        sampled += collect_step_samples(generator, tokenizer, puzzles, args.step_samples,
                                        args.rollout_temperature, seed=args.seed)
        print(f"[verifier] {len(sampled)} sampled paths, {time.time() - start:.0f}s", flush=True)
    paths = exact_labels.labelled_paths(puzzles, rng, sampled, per_puzzle=args.synthetic)
    good = sum(sum(labels) for _, _, labels in paths) / max(1, sum(len(lab) for _, _, lab in paths))
    print(f"[verifier] {len(paths)} paths with exact labels ({good:.1%} of steps good), "
          f"{time.time() - start:.0f}s", flush=True)
    return paths


def verifier_rollouts(args, generator: GPT, tokenizer: CharTokenizer, puzzles) -> list:
    start = time.time()
    cache = Path(args.rollouts_file) if args.rollouts_file else None
    if cache is not None and cache.exists():
        rollouts = load_rollouts(cache)
        print(f"[rollouts] {len(rollouts)} rollouts read from {cache}", flush=True)
    else:
        rollouts = collect_rollouts(generator, tokenizer, puzzles, num_rollouts(args), args.rollout_temperature,
                                    seed=args.seed, num_random_prefixes=args.random_prefixes,
                                    prefix_rollouts=args.prefix_rollouts, num_corrupt=args.corrupt)
        if cache is not None:
            save_rollouts(rollouts, cache)
    num_right = sum(r.correct for r in rollouts)
    print(f"[rollouts] {len(rollouts)} rollouts, {num_right / max(1, len(rollouts)):.1%} right, "
          f"{time.time() - start:.0f}s", flush=True)
    return rollouts


def run(args: argparse.Namespace) -> int:
    """Train both models and write them to ``args.out``; returns a process exit code."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    puzzles = train_puzzles(args)
    info = {"seed": args.seed, "dev_holdout": args.dev, "num_train_puzzles": len(puzzles)}
    start = time.time()
    if args.skip_generator:
        generator, tokenizer = checkpoint.load_generator(args.out)
    else:
        generator, tokenizer = train_generator(args, puzzles)
        checkpoint.save_model(generator, tokenizer, args.out, checkpoint.GENERATOR_NAME,
                              {**info, "steps": args.gen_steps, "random_fraction": args.random_fraction,
                               "seconds": round(time.time() - start)})
        print(f"[generator] saved to {args.out} after {time.time() - start:.0f}s", flush=True)
    verifier = train_verifier(args, generator, tokenizer, puzzles)
    checkpoint.save_model(verifier, tokenizer, args.out, checkpoint.VERIFIER_NAME,
                          {**info, "steps": args.ver_steps, "labels": args.labels, "synthetic": args.synthetic,
                           "step_samples": args.step_samples,
                           "rollouts_per_puzzle": num_rollouts(args),
                           "random_prefixes": args.random_prefixes, "prefix_rollouts": args.prefix_rollouts,
                           "corrupt": args.corrupt, "seconds": round(time.time() - start)})
    print(f"[done] generator and verifier in {Path(args.out)} after {time.time() - start:.0f}s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ponder.models.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
