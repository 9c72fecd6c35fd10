"""transformers backends: a sampling generator (here) and a PRM verifier (``hf_verifier.py``).

The generator runs its own decode loop instead of ``model.generate`` so that it can
(1) compute each prompt once and copy its KV cache to the request's ``n`` samples,
(2) draw each request's samples from its own seeded ``torch.Generator`` (the
draws do not depend on what else shares the batch; only padding may move the
logits in their last bits), (3) drop finished rows from the batch as soon as
they end a step, hit EOS or their token limit, and (4) cut steps so that none is
empty (blank lines before a step are not a step).

Prompts go through the model's chat template (``chat.py``) when it has one, and
token counts are those of the prompt as the model read it. Models load from a
checkpoint folder or a GGUF file (``checkpoint.py``); nothing is downloaded.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM

from ponder.actors.backends.chat import ChatFormat
from ponder.actors.backends.hf_cache import preallocated_cache
from ponder.actors.backends.hf_model import (eos_ids, load_model, load_tokenizer, model_name, resolve_dtype,
                                             spec_from_model)
from ponder.kernels import sampling_probs
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult


def cut_step(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """A sample's text as a step: ``(step, stopped)``.

    With stop strings (a request for one step), whitespace before the step's first
    character is skipped, also when it holds a stop string: a model that writes a
    blank line between steps (``"\\n\\n"`` where the task's delimiter is ``"\\n"``)
    starts its next step with ``"\\n"``, and that is no step. The step ends before
    the first stop string after its first character. Without stop strings the text
    is returned whole.
    """
    stops = [s for s in stops if s]
    if not stops:
        return text, False
    start = len(text) - len(text.lstrip())
    cut = min((i for i in (text.find(s, start) for s in stops) if i >= 0), default=-1)
    return (text[start:cut], True) if cut >= 0 else (text[start:], False)


def draw(logits: torch.Tensor, temperature: float, top_p: float,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One token a row from ``sampling_probs`` (temperature, top-p) and its raw logprob.

    Drawn by inverting each row's CDF at one uniform number: on CPU that costs a
    cumulative sum, where the Gumbel draw of ``ponder.kernels.sample`` needs an
    exponential variate for every vocabulary entry, a large share of a small
    model's decode step.

    Args:
        logits: (B, V) raw next-token logits.
        temperature: >= 0; 0 is greedy.
        top_p: in (0, 1].
        generator: the request's seeded generator.

    Returns:
        (tokens, logprobs): (B,) int64 and (B,) float32 under log_softmax(logits).
    """
    cdf = sampling_probs(logits, temperature, 0, top_p).cumsum(-1)  # (B, V)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device)  # (B, 1)
    # right=True: the first entry whose CDF passes u, so a token of probability 0 is never drawn.
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=logits.shape[1] - 1)[:, 0]  # (B,)
    raw = logits.float()  # (B, V)
    logprobs = raw.gather(1, tokens[:, None])[:, 0] - torch.logsumexp(raw, dim=-1)  # (B,)
    return tokens, logprobs


class _Rows:
    """Per-sample state of one batch: which request a row serves and what it produced."""

    def __init__(self, requests: list[GenerateRequest]):
        self.request_of = [i for i, r in enumerate(requests) for _ in range(r.n)]  # row -> request index
        num_rows = len(self.request_of)
        self.token_ids: list[list[int]] = [[] for _ in range(num_rows)]
        self.logprob = [0.0] * num_rows
        self.text = [""] * num_rows
        self.finish = [""] * num_rows  # "" while running, then "stop" | "eos" | "length"


class HFGenerator:
    """GeneratorBackend on a local transformers causal LM (checkpoint folder or GGUF file).

    Args:
        model_path: folder saved with ``save_pretrained``, or the folder holding ``gguf_file``.
        gguf_file: a ``.gguf`` file in ``model_path`` to load (weights and tokenizer) instead.
        chat_template: "auto" (the tokenizer's, raw prompts if it has none), "none",
            a Jinja file path or Jinja text; see ``chat.py``.
        system_prompt: the task's system turn (None: the template's default).
        few_shot: the task's ``(prompt, answer)`` example pairs, as earlier turns.
        dtype: "float32" (default), "bfloat16" or "float16".
        device: torch device, "cpu" by default.
        seed: seeds the requests that carry no seed of their own.
        max_batch_rows: at most this many samples decode together (requests are kept whole).
        trust_remote_code: allow a checkpoint's own modelling code (off by default).

    Raises:
        ValueError: a missing model path or GGUF file, an unknown dtype, a bad chat template.
    """

    def __init__(self, model_path: str | Path, *, gguf_file: str | None = None, chat_template: str | None = "auto",
                 system_prompt: str | None = None, few_shot: Sequence[Sequence[str]] = (), dtype: str = "float32",
                 device: str = "cpu", seed: int = 0, max_batch_rows: int = 64, trust_remote_code: bool = False):
        resolve_dtype(dtype)  # a bad dtype fails before the (slow) load
        self.device = torch.device(device)
        self.model = load_model(AutoModelForCausalLM, model_path, gguf_file, dtype, self.device, trust_remote_code)
        self.tokenizer = load_tokenizer(str(Path(model_path).expanduser()), trust_remote_code, gguf_file)
        self.chat = ChatFormat(self.tokenizer, chat_template, system_prompt, few_shot)
        self.eos_ids = eos_ids(self.model, self.tokenizer)
        self.max_batch_rows = max_batch_rows
        # The prompt runs once for all n samples of a request: reserve it once.
        self._spec = replace(spec_from_model(model_name(model_path, gguf_file), self.model), prompt_once=True,
                             prompt_overhead_tokens=self.chat.overhead_tokens())
        self._seeds = random.Random(seed)
        self._prefill_kwargs = {"logits_to_keep": 1} if _accepts(self.model, "logits_to_keep") else {}
        # transformers renamed past_key_values to cache (and warns on every call with the old name)
        self._cache_arg = "cache" if _accepts(self.model, "cache") else "past_key_values"

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width of the loaded model."""
        return self._spec

    def render_prompt(self, request: GenerateRequest) -> str:
        """The text the model reads for ``request``: its prompt in the chat format, then its steps."""
        return self.chat.render(request.prefix, request.prompt_end)

    def count_prompt_tokens(self, requests: list[GenerateRequest]) -> list[int]:
        """Each request's prompt tokens for one sample, as ``generate`` would count them."""
        return [len(self._encode_prompt(r)) for r in requests]

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Sample every request's ``n`` continuations; one result per request, in order.

        Texts exclude the prompt, are cut before the first stop string after the
        step's first non-blank character, and are stripped (``cut_step``); token ids
        and the cumulative logprob (raw model distribution) run from the first
        generated token up to and including the one that completed the stop string,
        or EOS (finish reason "eos": the model ended its answer).
        """
        results: list[GenerateResult] = []
        for chunk in _chunks(requests, self.max_batch_rows):
            results.extend(self._generate_chunk(chunk))
        return results

    @torch.inference_mode()
    def _generate_chunk(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        prompts = [self._encode_prompt(r) for r in requests]
        generators = [self._generator(r.seed) for r in requests]
        rows = _Rows(requests)
        row_index = torch.tensor(rows.request_of, device=self.device)  # (R,) request of each row
        width = max(len(p) for p in prompts)
        room = max(r.max_new_tokens for r in requests)
        input_ids, mask = _left_pad(prompts, self.tokenizer.pad_token_id, width + room, self.device)  # (B, W+N)
        padded = any(len(p) < width for p in prompts)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)  # (B, W)
        # Keys and values are written in place into buffers sized for the whole decode.
        cache = preallocated_cache(self.model.config, width + room)
        logits = self.model(input_ids=input_ids, attention_mask=mask[:, :width] if padded else None,
                            position_ids=positions, use_cache=True, **{self._cache_arg: cache},
                            **self._prefill_kwargs).logits[:, -1]  # (B, V)
        # Each prompt ran once; its KV cache is copied to its n sample rows.
        cache.reorder_cache(row_index)
        logits, mask = logits[row_index], mask[row_index]  # (R, V), (R, W+N)
        next_pos = positions[row_index, -1] + 1  # (R,) position of the next token
        active = list(range(len(rows.request_of)))  # rows still decoding, in batch order
        for step in range(room):
            tokens = self._sample_rows(requests, generators, rows, active, logits)
            keep = [k for k, row in enumerate(active) if not self._advance(requests, rows, row, tokens[k])]
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows so they cost nothing more
                keep_t = torch.tensor(keep, device=self.device)
                cache.reorder_cache(keep_t)
                mask, next_pos = mask[keep_t], next_pos[keep_t]
                active = [active[k] for k in keep]
            step_ids = torch.tensor([[rows.token_ids[r][-1]] for r in active], device=self.device)  # (R', 1)
            # Without padding every row attends to all it has, and no mask is faster.
            step_mask = mask[:, :width + step + 1] if padded else None  # (R', W+t+1)
            logits = self.model(input_ids=step_ids, attention_mask=step_mask, position_ids=next_pos[:, None],
                                use_cache=True, **{self._cache_arg: cache}).logits[:, -1]  # (R', V)
            next_pos = next_pos + 1
        return [_result(req, i, rows, len(prompts[i])) for i, req in enumerate(requests)]

    def _encode_prompt(self, req: GenerateRequest) -> list[int]:
        if req.n < 1 or req.max_new_tokens < 1:
            raise ValueError(f"request {req.request_id}: n and max_new_tokens must be >= 1, got {req.n}, {req.max_new_tokens}")
        ids = self.chat.encode(req.prefix, req.prompt_end)
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]  # an empty prompt still needs one position
        if not ids:
            raise ValueError(f"request {req.request_id}: empty prefix and the tokenizer has no BOS token")
        return ids

    def _generator(self, seed: int | None) -> torch.Generator:
        seed = self._seeds.getrandbits(63) if seed is None else seed
        return torch.Generator(device=self.device).manual_seed(seed)

    def _sample_rows(self, requests, generators, rows: _Rows, active: list[int], logits: torch.Tensor) -> list[int]:
        """One token for each active row, drawn with its request's parameters and generator."""
        tokens = [0] * len(active)
        by_request: dict[int, list[int]] = {}  # request index -> positions in `active`
        for k, row in enumerate(active):
            by_request.setdefault(rows.request_of[row], []).append(k)
        for i, ks in by_request.items():
            req = requests[i]
            picked, logprobs = draw(logits[ks], req.temperature, req.top_p, generators[i])  # (r,), (r,)
            for k, tok, lp in zip(ks, picked.tolist(), logprobs.tolist()):
                tokens[k] = tok
                rows.logprob[active[k]] += lp
        return tokens

    def _advance(self, requests, rows: _Rows, row: int, token: int) -> bool:
        """Append a token to a row; True when the row is finished."""
        req = requests[rows.request_of[row]]
        ids = rows.token_ids[row]
        ids.append(token)
        text, stopped = cut_step(self.tokenizer.decode(ids, skip_special_tokens=True), req.stop)
        if stopped:
            rows.text[row], rows.finish[row] = text, "stop"
        elif token in self.eos_ids:
            rows.text[row], rows.finish[row] = text, "eos"
        elif len(ids) >= req.max_new_tokens:
            rows.text[row], rows.finish[row] = text, "length"
        return bool(rows.finish[row])


def _accepts(model, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


def _chunks(requests: list[GenerateRequest], max_rows: int):
    chunk, rows = [], 0
    for req in requests:
        if chunk and rows + req.n > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(req)
        rows += req.n
    if chunk:
        yield chunk


def _left_pad(seqs: list[list[int]], pad_id: int, total: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) token ids padded on the left to the longest, and a (B, total) attention mask
    whose positions past W are ones: the tokens to come, so a step slices it, never grows it."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.ones((len(seqs), total), dtype=torch.long)
    for b, s in enumerate(seqs):
        mask[b, :width - len(s)] = 0
        if s:
            ids[b, width - len(s):] = torch.tensor(s)
    return ids.to(device), mask.to(device)


def _result(req: GenerateRequest, i: int, rows: _Rows, prompt_len: int) -> GenerateResult:
    mine = [r for r, owner in enumerate(rows.request_of) if owner == i]
    token_ids = [rows.token_ids[r] for r in mine]
    return GenerateResult(
        request_id=req.request_id,
        texts=[rows.text[r] for r in mine],
        token_ids=token_ids,
        cumulative_logprobs=[rows.logprob[r] for r in mine],
        num_prompt_tokens=req.n * prompt_len,
        num_cached_prompt_tokens=(req.n - 1) * prompt_len,  # the prompt ran once for all n samples
        num_generated_tokens=sum(len(t) for t in token_ids),
        finish_reasons=[rows.finish[r] for r in mine],
    )
