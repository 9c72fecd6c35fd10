"""transformers generator backend over a local checkpoint, and the loading helpers the hf PRM shares.

The generator runs its own decode loop instead of ``model.generate`` so that it can
(1) compute each prompt once and copy its KV cache to the request's ``n`` samples,
(2) draw each request's samples from its own seeded ``torch.Generator`` (the
draws do not depend on what else shares the batch; only padding may move the
logits in their last bits), and (3) drop finished rows
from the batch as soon as they hit a stop string, EOS or their token limit.

Nothing is downloaded: models load with ``local_files_only=True``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import torch

from ponder.kernels import sample
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(model_path: str | Path) -> str:
    """The local checkpoint folder, checked before anything loads.

    Raises:
        ValueError: the path is not a folder holding a ``config.json``.
    """
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model path {str(model_path)!r} is not a local checkpoint folder with a config.json "
            "(models are never downloaded: save one with save_pretrained and pass its folder)"
        )
    return str(path)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name ("float32", "bfloat16", "float16").

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def spec_from_model(name: str, model) -> ModelSpec:
    """ModelSpec from a loaded model: non-embedding parameters, layers and width from its config.

    The output projection counts (it is a matmul on every token), also when its
    weight is tied to the input embedding, which does not (it is a lookup).
    """
    config = model.config.get_text_config()
    num_params = sum(p.numel() for p in model.parameters())  # unique tensors: a tied head once
    embed = model.get_input_embeddings().weight
    num_params -= embed.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is embed:
        num_params += embed.numel()
    return ModelSpec(name=name, num_params=num_params, num_layers=config.num_hidden_layers, d_model=config.hidden_size)


class _Rows:
    """Per-sample state of one batch: which request a row serves and what it produced."""

    def __init__(self, requests: list[GenerateRequest]):
        self.request_of = [i for i, r in enumerate(requests) for _ in range(r.n)]  # row -> request index
        num_rows = len(self.request_of)
        self.token_ids: list[list[int]] = [[] for _ in range(num_rows)]
        self.logprob = [0.0] * num_rows
        self.text = [""] * num_rows
        self.finish = [""] * num_rows  # "" while running, then "stop" | "length"


class HFGenerator:
    """GeneratorBackend on a transformers causal LM from a local folder.

    Args:
        model_path: folder saved with ``save_pretrained`` (config, weights, tokenizer).
        dtype: "float32" (default), "bfloat16" or "float16".
        device: torch device, "cpu" by default.
        seed: seeds the requests that carry no seed of their own.
        max_batch_rows: at most this many samples decode together (requests are kept whole).
        trust_remote_code: allow a checkpoint's own modelling code (off by default).

    Raises:
        ValueError: a missing model path or an unknown dtype.
    """

    def __init__(self, model_path: str | Path, *, dtype: str = "float32", device: str = "cpu", seed: int = 0,
                 max_batch_rows: int = 64, trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM

        path = resolve_model_path(model_path)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(path, trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        ).to(self.device).eval()
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.max_batch_rows = max_batch_rows
        # The prompt runs once for all n samples of a request: reserve it once.
        self._spec = replace(spec_from_model(Path(path).name, self.model), prompt_once=True)
        self._seeds = random.Random(seed)

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width of the loaded model."""
        return self._spec

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Sample every request's ``n`` continuations; one result per request, in order.

        Texts exclude the prompt and are cut before the first stop string; token ids
        and the cumulative logprob (raw model distribution) run up to and including
        the token that completed the stop string, or EOS.
        """
        results: list[GenerateResult] = []
        for chunk in _chunks(requests, self.max_batch_rows):
            results.extend(self._generate_chunk(chunk))
        return results

    @torch.inference_mode()
    def _generate_chunk(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        from transformers import DynamicCache

        prompts = [self._encode_prompt(r) for r in requests]
        generators = [self._generator(r.seed) for r in requests]
        rows = _Rows(requests)
        row_index = torch.tensor(rows.request_of, device=self.device)  # (R,) request of each row
        input_ids, mask = _left_pad(prompts, self.tokenizer.pad_token_id, self.device)  # (B, L) each
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True).logits[:, -1]  # (B, V)
        # Each prompt ran once; its KV cache is copied to its n sample rows.
        cache.reorder_cache(row_index)
        logits, mask = logits[row_index], mask[row_index]  # (R, V), (R, L)
        next_pos = mask.sum(-1)  # (R,) position of the next token
        active = list(range(len(rows.request_of)))  # rows still decoding, in batch order
        while active:
            tokens = self._sample_rows(requests, generators, rows, active, logits)
            keep = [k for k, row in enumerate(active) if not self._advance(requests, rows, row, tokens[k])]
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows so they cost nothing more
                keep_t = torch.tensor(keep, device=self.device)
                cache.reorder_cache(keep_t)
                mask, next_pos = mask[keep_t], next_pos[keep_t]
                active = [active[k] for k in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (R', L+t)
            step_ids = torch.tensor([[rows.token_ids[r][-1]] for r in active], device=self.device)  # (R', 1)
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos[:, None],
                                past_key_values=cache, use_cache=True).logits[:, -1]  # (R', V)
            next_pos = next_pos + 1
        return [_result(req, i, rows, len(prompts[i])) for i, req in enumerate(requests)]

    def _encode_prompt(self, req: GenerateRequest) -> list[int]:
        if req.n < 1 or req.max_new_tokens < 1:
            raise ValueError(f"request {req.request_id}: n and max_new_tokens must be >= 1, got {req.n}, {req.max_new_tokens}")
        ids = self.tokenizer(req.prefix)["input_ids"]
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
            picked, logprobs = sample(logits[ks], req.temperature, 0, req.top_p, generators[i])  # (r,), (r,)
            for k, tok, lp in zip(ks, picked.tolist(), logprobs.tolist()):
                tokens[k] = tok
                rows.logprob[active[k]] += lp
        return tokens

    def _advance(self, requests, rows: _Rows, row: int, token: int) -> bool:
        """Append a token to a row; True when the row is finished."""
        req = requests[rows.request_of[row]]
        ids = rows.token_ids[row]
        ids.append(token)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in req.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            rows.text[row], rows.finish[row] = text[:cut], "stop"
        elif token in self.eos_ids:
            rows.text[row], rows.finish[row] = text, "stop"
        elif len(ids) >= req.max_new_tokens:
            rows.text[row], rows.finish[row] = text, "length"
        return bool(rows.finish[row])


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


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


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) token ids padded on the left and their (B, L) attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, width - len(s):] = torch.tensor(s)
            mask[b, width - len(s):] = 1
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
