"""One-shot GPU check: the kernels' GPU tests, the embedded backend on CUDA (Triton vs torch vs CPU).

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out OUT        # about 3-4 minutes on one H200
    PYTHONPATH=. python3 benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check   # same code, tiny, CPU

Made for a lent GPU box with torch, triton and pytest but no Ray and no network, run
from the repository root; nothing here imports Ray. Three parts, each guarded so that
one failing keeps the others' figures, each bounded by what is left of ``--budget-s``:
1. ``pytest``: the GPU-marked tests of tests/test_kernels_gpu.py and
   tests/test_embedded_backend.py (no -x); pass/fail counts from JUnit XML.
2. ``embedded``: the shipped generator and verifier on ``cpu``, ``cuda/torch`` and
   ``cuda/triton``. Game-of-24 test puzzles (900-999): greedy decoding (n = 1) and
   sampling (n samples, seed = puzzle index) timed after a warm-up that compiles the
   Triton kernels, with the prefix cache cleared before each timed call. Agreement:
   greedy token sequences identical to CPU's (a float difference can flip a near-tie,
   so this is a fraction); sampled draws cannot agree across paths (each path has its
   own random stream), so they are compared by solve rate and by reproducibility
   (same seed twice on one path). The verifier scores one fixed set of paths (known
   solutions and random walks) on each; agreement is the largest step-score
   difference from CPU.
3. ``kernels``: benchmarks/kernel_speed.py --device cuda --quick (Triton vs torch vs naive).
Writes OUT/gpu_check.log (all that is printed), OUT/gpu_check.json (every figure),
OUT/pytest.{xml,log}, OUT/kernels.log; the last line printed is one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from anywhere; the box has no ponder installed

from ponder.actors.backends.embedded import load_default_generator, load_default_verifier  # noqa: E402
from ponder.kernels import triton_available  # noqa: E402
from ponder.search.messages import GenerateRequest, ScoreRequest  # noqa: E402
from ponder.tasks import game24  # noqa: E402

_LOG = None  # the open log file


def log(msg: str) -> None:
    print(msg, flush=True)
    if _LOG is not None:
        _LOG.write(msg + "\n")
        _LOG.flush()


def left(deadline: float) -> float:
    return deadline - time.monotonic()


def guarded(name: str, results: dict, fn, *args) -> None:
    """Run one part; on failure record the error and go on."""
    start = time.monotonic()
    log(f"== {name}")
    try:
        results[name] = fn(*args)
    except BaseException as e:  # a KeyboardInterrupt ends the run, but the summary still prints
        results[name] = {"error": f"{type(e).__name__}: {e}"}
        log(traceback.format_exc())
        if isinstance(e, KeyboardInterrupt):
            raise
    results[name]["seconds"] = round(time.monotonic() - start, 1)
    log(f"== {name} done in {results[name]['seconds']} s")


def run_logged(cmd: list[str], log_path: Path, timeout: float) -> tuple[int, str]:
    """Run a command with the repo on PYTHONPATH; its output goes to log_path. Returns (rc, output)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout:.0f} s"
        out = out if isinstance(out, str) else out.decode(errors="replace")
    log_path.write_text(out)
    for line in out.strip().splitlines()[-8:]:
        log(f"   | {line}")
    return rc, out


# ------------------------------------------------------------------ 1. pytest


def part_pytest(out: Path, deadline: float, smoke: bool) -> dict:
    xml = out / "pytest.xml"
    files = ["tests/test_kernels_gpu.py", "tests/test_embedded_backend.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *files,
           f"--junitxml={xml}", "-o", "junit_family=xunit1"]
    rc, _ = run_logged(cmd, out / "pytest.log", timeout=max(10.0, min(100.0, left(deadline) - 110)))
    counts = {"returncode": rc}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        total, failed, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        counts.update(passed=total - failed - errors - skipped, failed=failed, errors=errors, skipped=skipped)
        counts["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                                  if c.find("failure") is not None or c.find("error") is not None][:20]
    log(f"   pytest: {counts}")
    return counts


# ------------------------------------------------------------------ 2. embedded backend


def puzzles(num: int) -> list[list[int]]:
    return [game24.parse_numbers(p.problem) for p in game24.puzzles_in_test_split()[:num]]


def prompt(nums: list[int]) -> str:
    return f"Input: {' '.join(map(str, nums))}\n"


def requests(nums: list[list[int]], n: int, temperature: float, max_new: int, seed0: int = 0) -> list:
    return [GenerateRequest(i, prompt(x), n=n, max_new_tokens=max_new, stop=(), temperature=temperature,
                            seed=seed0 + i) for i, x in enumerate(nums)]


def fixed_paths(nums: list[list[int]], num_paths: int) -> list[ScoreRequest]:
    """The same score requests on every path: up to half known solutions, the rest random walks."""
    rng = random.Random(0)
    reqs = []
    for i, x in enumerate(nums):
        paths = game24.solutions(x)[: num_paths // 2]
        while len(paths) < num_paths:
            paths.append(game24.random_trace(x, rng)[0])
        reqs.append(ScoreRequest(i, prompt(x), paths))
    return reqs


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def solve_stats(nums: list[list[int]], results) -> dict:
    correct = [[bool(a) and game24.verify(x, a) for a in (game24.extract_answer(t.split("\n")) for t in r.texts)]
               for x, r in zip(nums, results)]
    return {"solve_rate": sum(any(c) for c in correct) / len(correct),
            "correct_sample_fraction": sum(map(sum, correct)) / sum(map(len, correct))}


def run_path(name: str, device: str, kernels: str, cfg: argparse.Namespace, deadline: float) -> dict:
    """All generation and scoring figures of one (device, kernel path)."""
    gen = load_default_generator(device=device, kernels=kernels)
    ver = load_default_verifier(device=device, kernels=kernels)
    where = gen.sampler.device
    row: dict = {"device": str(where), "kernels": kernels}
    on_cpu = where.type == "cpu"
    num_sampled = cfg.cpu_prompts if on_cpu else cfg.prompts
    if not on_cpu:  # compile the Triton kernels (n = 1 and n > 1 shapes) outside the timed calls
        warmup = requests(puzzles(8), cfg.samples, 1.0, cfg.max_new, seed0=10_000)
        warmup += requests(puzzles(8), 1, 0.0, cfg.max_new, seed0=20_000)
        _, row["warmup_s"] = timed(lambda: gen.generate(warmup), where)
        ver.score(fixed_paths(puzzles(8), cfg.paths))
        gen.clear_cache()
        ver.clear_cache()
    nums = puzzles(cfg.prompts)
    greedy, secs = timed(lambda: gen.generate(requests(nums, 1, 0.0, cfg.max_new)), where)
    row["greedy_tokens_per_s"] = sum(r.num_generated_tokens for r in greedy) / secs
    row["greedy"] = [(r.token_ids[0], r.cumulative_logprobs[0]) for r in greedy]
    gen.clear_cache()
    if left(deadline) < 60:
        log(f"   {name}: skipping sampling, {left(deadline):.0f} s left")
        return row
    sampled_nums = puzzles(num_sampled)
    sampled, secs = timed(lambda: gen.generate(requests(sampled_nums, cfg.samples, 1.0, cfg.max_new)), where)
    tokens = sum(r.num_generated_tokens for r in sampled)
    row.update(sample_prompts=num_sampled, sample_tokens=tokens, sample_tokens_per_s=tokens / secs,
               **solve_stats(sampled_nums, sampled))
    gen.clear_cache()
    again = gen.generate(requests(sampled_nums[:4], cfg.samples, 1.0, cfg.max_new))
    row["reproducible_fraction"] = _same_fraction([r.token_ids for r in sampled[:4]], [r.token_ids for r in again])
    score_reqs = fixed_paths(nums, cfg.paths)
    scores, secs = timed(lambda: ver.score(score_reqs), where)
    computed = sum(r.num_prompt_tokens - r.num_cached_prompt_tokens for r in scores)
    num_paths = sum(len(r.paths) for r in score_reqs)
    row.update(score_positions_per_s=computed / secs, score_paths_per_s=num_paths / secs)
    row["scores"] = [s for r in scores for path in r.step_scores for s in path]
    log(f"   {name}: sampled {row['sample_tokens_per_s']:.0f} tokens/s, "
        f"scored {row['score_positions_per_s']:.0f} positions/s")
    return row


def _same_fraction(a: list, b: list) -> float:
    pairs = [(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)]
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def agreement(ref: dict, row: dict) -> dict:
    """How a path's greedy tokens and step scores compare with the reference (CPU) path."""
    out = {}
    if "greedy" in ref and "greedy" in row:
        same = [a[0] == b[0] for a, b in zip(ref["greedy"], row["greedy"])]
        out["greedy_identical_fraction"] = sum(same) / len(same)
        diffs = [abs(a[1] - b[1]) for a, b, s in zip(ref["greedy"], row["greedy"], same) if s]
        out["greedy_logprob_max_abs_diff"] = max(diffs, default=float("nan"))
    if "scores" in ref and "scores" in row:
        diffs = [abs(a - b) for a, b in zip(ref["scores"], row["scores"])]
        out["score_max_abs_diff"] = max(diffs, default=float("nan"))
        out["score_within_1e-4_fraction"] = sum(d <= 1e-4 for d in diffs) / max(1, len(diffs))
    return out


KERNELS_RESERVE_S = 30.0  # what part 3 keeps of the budget whatever part 2 wants


def part_embedded(cfg: argparse.Namespace, deadline: float) -> dict:
    deadline -= KERNELS_RESERVE_S
    if cfg.cpu_smoke:  # the same code on CPU: the "GPU" paths are CPU with an explicit kernel path
        paths = [("cpu", "cpu", "auto"), ("cuda/torch", "cpu", "torch"), ("cuda/triton", "cpu", "torch")]
    else:
        paths = [("cpu", "cpu", "torch"), ("cuda/torch", "cuda", "torch"), ("cuda/triton", "cuda", "triton")]
    rows = {}
    for name, device, kernels in paths:
        if left(deadline) < 30:
            rows[name] = {"error": f"skipped: {left(deadline):.0f} s left"}
            continue
        try:
            rows[name] = run_path(name, device, kernels, cfg, deadline)
        except Exception as e:
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
            log(traceback.format_exc())
    ref = rows.get("cpu", {})
    for name, row in rows.items():
        if name != "cpu":
            row.update(agreement(ref, row))
    if "greedy" in rows.get("cuda/torch", {}) and "greedy" in rows.get("cuda/triton", {}):
        rows["triton_vs_torch_on_cuda"] = agreement(rows["cuda/torch"], rows["cuda/triton"])
    for row in rows.values():
        row.pop("greedy", None), row.pop("scores", None)
    for name, row in rows.items():
        log(f"   {name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return rows


# ------------------------------------------------------------------ 3. kernel benchmark


def part_kernels(out: Path, deadline: float, smoke: bool) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "kernel_speed.py"), "--device", "cpu" if smoke else "cuda", "--quick"]
    if smoke:
        cmd.append("--smoke")
    rc, text = run_logged(cmd, out / "kernels.log", timeout=max(10.0, left(deadline) - 5))
    lines = [line for line in text.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    result.pop("rows", None)
    return {"returncode": rc, **result}


# ------------------------------------------------------------------ main


def _clean(value):
    """JSON-safe: NaN and inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def headline(results: dict) -> dict:
    """The figures the lead reads first; every one of them is also in the parts below."""
    def each(key: str) -> dict:
        return {name: row.get(key) for name, row in results.get("embedded", {}).items()
                if isinstance(row, dict) and key in row}

    pytest = results.get("pytest", {})
    kernels = results.get("kernels", {})
    return {
        "pytest_passed": pytest.get("passed"), "pytest_failed": pytest.get("failed"),
        "pytest_errors": pytest.get("errors"),
        "sample_tokens_per_s": each("sample_tokens_per_s"), "greedy_tokens_per_s": each("greedy_tokens_per_s"),
        "score_positions_per_s": each("score_positions_per_s"), "solve_rate": each("solve_rate"),
        "greedy_identical_vs_cpu": each("greedy_identical_fraction"),
        "score_max_abs_diff_vs_cpu": each("score_max_abs_diff"),
        "reproducible_fraction": each("reproducible_fraction"),
        "kernels_triton_vs_naive": kernels.get("headline_triton_vs_naive"),
        "kernels_triton_vs_torch": kernels.get("headline_triton_vs_torch"),
        "errors": [f"{k}: {v['error']}" for k, v in results.items() if isinstance(v, dict) and "error" in v]
                  + [f"embedded {k}: {v['error']}" for k, v in results.get("embedded", {}).items()
                     if isinstance(v, dict) and "error" in v],
    }  # fmt: skip


def main() -> None:
    global _LOG
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="folder for the log and figures")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU: checks this script runs")
    parser.add_argument("--budget-s", type=float, default=220.0, help="stop starting new work after this long")
    parser.add_argument("--prompts", type=int, default=64, help="Game-of-24 test puzzles per run")
    parser.add_argument("--samples", type=int, default=16, help="samples per puzzle when sampling")
    parser.add_argument("--cpu-prompts", type=int, default=16, help="puzzles sampled on CPU (it is slow)")
    parser.add_argument("--paths", type=int, default=16, help="paths per puzzle the verifier scores")
    parser.add_argument("--max-new", type=int, default=200, help="max new tokens a sample")
    cfg = parser.parse_args()
    if cfg.cpu_smoke:
        cfg.prompts, cfg.samples, cfg.cpu_prompts, cfg.paths, cfg.max_new = 3, 3, 2, 4, 40
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _LOG = open(out / "gpu_check.log", "w")
    start = time.monotonic()
    deadline = start + cfg.budget_s
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "triton": triton_available(), "cpu_threads": torch.get_num_threads(), "smoke": cfg.cpu_smoke}
    log(f"gpu_check: {env}")
    results: dict = {"env": env}
    guarded("pytest", results, part_pytest, out, deadline, cfg.cpu_smoke)
    guarded("embedded", results, part_embedded, cfg, deadline)
    guarded("kernels", results, part_kernels, out, deadline, cfg.cpu_smoke)
    results["ray_imported"] = "ray" in sys.modules
    results["wall_s"] = round(time.monotonic() - start, 1)
    results = _clean(results)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = {"check": "gpu_check", "headline": _clean(headline(results)), **results}
    log(json.dumps(summary, separators=(",", ":")))
    _LOG.close()


if __name__ == "__main__":
    main()
