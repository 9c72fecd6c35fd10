"""Shared-prefix attention vs naive batched attention over a duplicated prefix, on CPU or CUDA.

    python benchmarks/kernel_speed.py            # full grid, about 3-5 minutes on a busy 2-core box
    python benchmarks/kernel_speed.py --quick    # about a minute
    python benchmarks/kernel_speed.py --device cuda [--quick]   # Triton vs torch vs naive on a GPU

What is compared, per (siblings n, prefix P, suffix S, queries T):
- ``shared``: ponder.kernels.shared_prefix_attention (its torch path on CPU); the
  prefix KV is stored once, (H, P, D).
- ``naive``: torch's scaled_dot_product_attention over each sibling's own copy of
  [prefix; suffix] KV, (n, H, P+S, D): what an engine without prefix sharing holds.
  The copy is built before timing (an engine makes it once, when it forks), so the
  times are attention only.

Time: median CPU time of the process (time.process_time) for one call over repeats,
after a warm-up, the two methods alternating; the speedup is the median of the
per-repeat ratios. CPU time rather than wall time because the box is shared and
wall time there counts other people's work; with the default of 1 torch thread
CPU time is the call's own compute time.
Memory: peak resident memory of a fresh subprocess (Linux VmHWM, reset through
/proc/self/clear_refs just before) minus its resident memory before building the inputs:
the KV the method must hold plus the peak of every temporary inside the call, as the OS
saw it. A warm-up on tiny inputs runs first so that library initialisation is not counted.

On CUDA (``--device cuda``) three methods run: ``triton`` (the shared path's Triton
kernel), ``torch`` (its torch reference on the GPU) and ``naive`` as above. Time is
wall time of one call between two ``torch.cuda.synchronize()``, median over repeats;
memory is the peak of ``torch.cuda.max_memory_allocated`` over building the inputs
and one call, minus what was allocated before.

Ends with one JSON line; on CPU its headline is the speedup and memory ratio (naive /
shared) at n = 64, P = 1024, decode (T = 1); on CUDA the speedups of triton over naive
and over torch at the largest decode setting (n = 64, P = 4096 with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ponder.kernels import shared_prefix_attention

NUM_HEADS, HEAD_DIM = 8, 64  # a small model's attention layer; fp32 as on CPU
SHARED = {"shared": "auto", "triton": "triton", "torch": "torch"}  # shared-prefix method -> kernel path


def make_inputs(method: str, n: int, p: int, s: int, t: int, seed: int = 0, device: str = "cpu") -> tuple:
    """The tensors each method holds: shared keeps one prefix, naive n copies of it."""
    if device != "cpu":
        # Same numbers as on CPU, moved; one tensor at a time so the host copy stays small.
        return tuple(None if x is None else x.to(device) for x in make_inputs(method, n, p, s, t, seed))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, NUM_HEADS, t, HEAD_DIM, generator=g)  # (n, H, T, D)
    if method in SHARED:
        kp = torch.randn(NUM_HEADS, p, HEAD_DIM, generator=g)  # (H, P, D)
        vp = torch.randn(NUM_HEADS, p, HEAD_DIM, generator=g)  # (H, P, D)
        ks = torch.randn(n, NUM_HEADS, s, HEAD_DIM, generator=g)  # (n, H, S, D)
        vs = torch.randn(n, NUM_HEADS, s, HEAD_DIM, generator=g)  # (n, H, S, D)
        return q, kp, vp, ks, vs
    k = torch.randn(n, NUM_HEADS, p + s, HEAD_DIM, generator=g)  # (n, H, P+S, D) duplicated prefix
    v = torch.randn(n, NUM_HEADS, p + s, HEAD_DIM, generator=g)  # (n, H, P+S, D)
    key_pos = torch.arange(p + s)  # (P+S,)
    mask = key_pos[None, :] <= (p + s - t + torch.arange(t))[:, None]  # (T, P+S) causal in the suffix
    return q, k, v, (None if t == 1 else mask)


def run(method: str, inputs: tuple) -> torch.Tensor:
    if method in SHARED:
        return shared_prefix_attention(*inputs, kernels=SHARED[method])  # (n, H, T, D)
    q, k, v, mask = inputs
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (n, H, T, D)


def duplicate(shared_inputs: tuple) -> tuple:
    """The naive layout of the same numbers (for the correctness check)."""
    q, kp, vp, ks, vs = shared_inputs
    n, p, s, t = q.shape[0], kp.shape[1], ks.shape[2], q.shape[2]
    k = torch.cat([kp.expand(n, -1, -1, -1), ks], dim=2)  # (n, H, P+S, D)
    v = torch.cat([vp.expand(n, -1, -1, -1), vs], dim=2)  # (n, H, P+S, D)
    pos = torch.arange(p + s, device=q.device)  # (P+S,)
    mask = pos[None, :] <= (p + s - t + torch.arange(t, device=q.device))[:, None]  # (T, P+S)
    return q, k, v, mask


def paired_times(inputs: dict, repeats: int) -> dict:
    """Median CPU time of each method and median of the per-repeat ratios naive / shared.

    The methods alternate within a repeat, so a slow moment of the shared box hits
    both sides of a ratio rather than one method's whole run.
    """
    for method, x in inputs.items():
        run(method, x)  # warm-up
    times = {method: [] for method in inputs}  # method -> seconds per repeat
    for _ in range(repeats):
        for method, x in inputs.items():
            start = time.process_time()
            run(method, x)
            times[method].append(time.process_time() - start)
    ratios = [b / a for a, b in zip(times["shared"], times["naive"])]
    return {
        "shared_ms": 1e3 * statistics.median(times["shared"]),
        "naive_ms": 1e3 * statistics.median(times["naive"]),
        "speedup": statistics.median(ratios),
    }


def _rss_kib() -> tuple[int, int]:
    """(current, peak) resident set size in KiB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def child_peak_memory(method: str, n: int, p: int, s: int, t: int) -> None:
    """Run in a fresh process: print peak RSS growth (bytes) of building the inputs plus one call."""
    run(method, make_inputs(method, 2, 8, s, t))  # load kernels and allocator pools first
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak (VmHWM) to the current RSS
    base, _ = _rss_kib()
    inputs = make_inputs(method, n, p, s, t)
    run(method, inputs)
    peak = _rss_kib()[1]
    kv_bytes = sum(x.untyped_storage().nbytes() for x in inputs[1:] if x is not None)
    print(json.dumps({"peak_bytes": (peak - base) * 1024, "kv_bytes": kv_bytes}))


def peak_memory(method: str, n: int, p: int, s: int, t: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(n), str(p), str(s), str(t), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_equal(n: int, p: int, s: int, t: int) -> float:
    shared = make_inputs("shared", n, p, s, t)
    diff = (run("shared", shared) - run("naive", duplicate(shared))).abs().max()
    return float(diff)


def bench(configs: list[tuple[int, int, int, int]], repeats: int, memory_for: set, threads: int) -> list[dict]:
    rows = []
    for n, p, s, t in configs:
        row = {"n": n, "prefix": p, "suffix": s, "queries": t}
        row["max_abs_diff"] = check_equal(n, p, s, t)
        row.update(paired_times({m: make_inputs(m, n, p, s, t) for m in ("shared", "naive")}, repeats))
        if (n, p, s, t) in memory_for:
            for method in ("shared", "naive"):
                mem = peak_memory(method, n, p, s, t, threads)
                row[f"{method}_peak_mib"] = mem["peak_bytes"] / 2**20
                row[f"{method}_kv_mib"] = mem["kv_bytes"] / 2**20
            row["memory_ratio"] = row["naive_peak_mib"] / row["shared_peak_mib"]
        rows.append(row)
        print(_format(row), flush=True)
    return rows


def _format(row: dict) -> str:
    text = (
        f"n={row['n']:>3} P={row['prefix']:>5} S={row['suffix']:>3} T={row['queries']:>3}  "
        f"shared {row['shared_ms']:8.3f} ms  naive {row['naive_ms']:8.3f} ms  speedup {row['speedup']:5.2f}x"
    )
    if "memory_ratio" in row:
        text += (
            f"  peak MiB shared {row['shared_peak_mib']:7.1f} (kv {row['shared_kv_mib']:6.1f})"
            f"  naive {row['naive_peak_mib']:7.1f} (kv {row['naive_kv_mib']:6.1f})  ratio {row['memory_ratio']:5.1f}x"
        )
    return text + f"  max|diff| {row['max_abs_diff']:.1e}"


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def device_times(inputs: dict, repeats: int, device: str) -> dict:
    """Median wall time (ms) of one call of each method, the methods alternating within a repeat."""
    for method, x in inputs.items():
        run(method, x)  # warm-up: Triton compiles here
    times = {method: [] for method in inputs}  # method -> seconds per repeat
    for _ in range(repeats):
        for method, x in inputs.items():
            _sync(device)
            start = time.perf_counter()
            run(method, x)
            _sync(device)
            times[method].append(time.perf_counter() - start)
    return {f"{m}_ms": 1e3 * statistics.median(t) for m, t in times.items()}


def cuda_peak_mib(method: str, n: int, p: int, s: int, t: int, device: str) -> float:
    """Peak CUDA memory growth of holding one method's inputs plus one call, MiB (NaN on CPU)."""
    if device == "cpu":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run(method, make_inputs(method, n, p, s, t, device=device))
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_device(quick: bool, device: str = "cuda", configs: list | None = None) -> dict:
    """Triton vs torch vs naive on ``device``; ``device="cpu"`` (no Triton) only smoke-tests this code."""
    methods = ("triton", "torch", "naive") if device != "cpu" else ("torch", "naive")
    if configs is None:
        decode = [(n, p, 16, 1) for p in (1024, 4096) for n in (16, 64)]
        prefill = [(n, p, 16, 16) for p in (1024, 4096) for n in (16, 64)]
        configs = decode + ([] if quick else prefill + [(256, 4096, 16, 1)])
    repeats = 20 if quick else 100
    name = torch.cuda.get_device_name() if device != "cpu" else "cpu"
    print(f"torch {torch.__version__}, {name}, H={NUM_HEADS}, D={HEAD_DIM}, fp32, {repeats} repeats", flush=True)
    rows = []
    for n, p, s, t in configs:
        row = {"n": n, "prefix": p, "suffix": s, "queries": t}
        shared = make_inputs("shared", n, p, s, t, device=device)
        naive = run("naive", duplicate(shared))
        for m in methods[:-1]:
            row[f"max_abs_diff_{m}"] = float((run(m, shared) - naive).abs().max())
        del shared, naive
        row.update(device_times({m: make_inputs(m, n, p, s, t, device=device) for m in methods}, repeats, device))
        row.update({f"{m}_peak_mib": cuda_peak_mib(m, n, p, s, t, device) for m in methods})
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    head = max(rows, key=lambda r: (r["queries"] == 1, r["n"] * r["prefix"]))  # the largest decode setting
    fast = methods[0]
    return {
        "benchmark": f"kernels.shared_prefix_attention_{device}", "device": name,
        "headline_setting": f"n{head['n']}_p{head['prefix']}_t{head['queries']}",
        f"headline_{fast}_vs_naive": round(head["naive_ms"] / head[f"{fast}_ms"], 2),
        f"headline_{fast}_vs_torch": round(head["torch_ms"] / head[f"{fast}_ms"], 2),
        f"headline_memory_naive_vs_{fast}": round(head["naive_peak_mib"] / head[f"{fast}_peak_mib"], 2),
        "rows": rows, "quick": quick,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and memory probes (about a minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the box is shared)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: Triton vs torch vs naive on a GPU (wall time, CUDA memory)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # gpu_check --cpu-smoke
    parser.add_argument("--child", nargs=5, metavar=("METHOD", "N", "P", "S", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child_peak_memory(args.child[0], *map(int, args.child[1:]))
        return
    if args.device == "cuda" or args.smoke:  # --smoke: the CUDA code path on CPU, tiny (no Triton, no memory)
        configs = [(4, 64, 8, 1), (4, 64, 8, 4)] if args.smoke else None
        print(json.dumps(bench_device(args.quick, "cpu" if args.smoke else "cuda", configs)))
        return
    decode = [(n, p, 16, 1) for p in (256, 512, 1024) for n in (16, 32, 64)]  # one new token a sibling
    prefill = [(n, p, 16, 16) for p in (256, 1024) for n in (16, 64)]  # each sibling's 16-token step at once
    repeats = 15 if args.quick else 60
    configs = decode + ([] if args.quick else prefill)
    memory_for = {(n, 1024, 16, 1) for n in (16, 32, 64)} | ({(16, 256, 16, 1)} if args.quick else set(configs))
    print(f"torch {torch.__version__}, {args.threads} thread(s), H={NUM_HEADS}, D={HEAD_DIM}, fp32, {repeats} repeats")
    rows = bench(configs, repeats, memory_for, args.threads)
    head = next(r for r in rows if (r["n"], r["prefix"], r["queries"]) == (64, 1024, 1))
    print(json.dumps({
        "benchmark": "kernels.shared_prefix_attention_cpu",
        "headline_speedup_n64_p1024_decode": round(head["speedup"], 2),
        "headline_memory_ratio_n64_p1024_decode": round(head["memory_ratio"], 2),
        "speedups": {f"n{r['n']}_p{r['prefix']}_t{r['queries']}": round(r["speedup"], 2) for r in rows},
        "quick": args.quick, "threads": args.threads,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
