"""Batched sampling from the embedded generator, with a prefix cache.

One ``generate`` call serves many requests at once:
1. Prefill: each request's prompt is looked up in the prefix cache; only the
   positions past the longest cached prefix are computed (requests with the same
   number of new positions share one forward).
2. Decode: the ``n`` samples of a request form one group over the prompt's KV;
   every step runs the projections and MLP over the rows of all groups together
   and attention per group with ``shared_prefix_attention``, then draws each
   group's next tokens with ``ponder.kernels.sample`` and the request's own seed.
3. Finished samples leave the batch; their KV goes into the cache, so the
   expansion of a child (prompt + step + delimiter) computes one new position.
Everything (weights, KV, logits, random streams) lives on the model's device; only
the drawn token ids and logprobs come back to the host, once a step per request.
"""

from __future__ import annotations

import random

import torch

from ponder.kernels import sample
from ponder.models.gpt import GPT
from ponder.models.kv_cache import GroupCache
from ponder.models.prefix_cache import DEFAULT_CACHE_TOKENS, CacheEntry, PrefixCache
from ponder.models.tokenizer import BOS_ID, EOS_ID, PAD_ID, CharTokenizer
from ponder.search.messages import GenerateRequest, GenerateResult


class _Stream:
    """The samples of one request while they are being decoded."""

    def __init__(self, request: GenerateRequest, prompt_ids: list[int], limit: int, device: torch.device):
        self.request = request
        self.prompt_ids = prompt_ids
        self.limit = limit  # most tokens a sample may add (max_new_tokens, block_size)
        n = request.n
        self.token_ids: list[list[int]] = [[] for _ in range(n)]
        self.texts = [""] * n
        self.logprobs = [0.0] * n
        self.finish = [""] * n
        self.active = list(range(n))  # sample indices still decoding, in group row order
        self.num_cached = 0  # prompt positions served from the prefix cache
        self.entry: CacheEntry | None = None  # the prompt's cache entry
        self.group: GroupCache | None = None
        self.logits: torch.Tensor | None = None  # (len(active), V) next-token logits
        self.generator = torch.Generator(device=device)  # sample() wants it on the logits' device

    def result(self) -> GenerateResult:
        n, prompt_len = self.request.n, len(self.prompt_ids)
        computed = prompt_len - self.num_cached if self.group is not None else 0
        return GenerateResult(
            request_id=self.request.request_id, texts=self.texts, token_ids=self.token_ids,
            cumulative_logprobs=self.logprobs, num_prompt_tokens=n * prompt_len,
            num_cached_prompt_tokens=n * prompt_len - computed,
            num_generated_tokens=sum(len(t) for t in self.token_ids), finish_reasons=self.finish)


class BatchGenerator:
    """Samples continuations of many prompts at once from a ``GPT``.

    Args:
        model: the generator (put in eval mode).
        tokenizer: its tokenizer.
        max_cache_tokens: prefix-cache size in positions (0 turns caching off).
        seed: draws the sampling seed of requests that bring none.
        kernels: attention and sampling kernel path, ``"auto"``, ``"torch"`` or
            ``"triton"`` (``ponder.kernels.select``); the model runs where its weights are.

    Raises:
        ValueError: ``kernels`` cannot run on the model's device.
    """

    def __init__(self, model: GPT, tokenizer: CharTokenizer,
                 max_cache_tokens: int = DEFAULT_CACHE_TOKENS, seed: int = 0, kernels: str = "auto"):
        self.model = model.eval()
        self.model.transformer.use_kernels(kernels)
        self.kernels = kernels
        self.device = self.model.transformer.wte.weight.device
        self.tokenizer = tokenizer
        self.cache = PrefixCache(max_cache_tokens)
        self._seeds = random.Random(seed)

    @torch.no_grad()
    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Sample ``n`` continuations of each request's prefix; one result per request, in order.

        Raises:
            ValueError: a prefix with a character outside the model's alphabet, or bad sampling values.
        """
        streams = [self._new_stream(r) for r in requests]
        live = [s for s in streams if s.limit > 0]
        self._prefill(live)
        while live:
            for s in live:
                self._sample_step(s)
            live = [s for s in live if s.active]
            if live:
                self._decode_step(live)
        return [s.result() for s in streams]

    def _new_stream(self, request: GenerateRequest) -> _Stream:
        if request.n < 1 or request.max_new_tokens < 1:
            raise ValueError(f"request {request.request_id}: n={request.n} and "
                             f"max_new_tokens={request.max_new_tokens} must be >= 1")
        ids = self.tokenizer.encode(request.prefix, bos=True)
        limit = min(request.max_new_tokens, self.model.config.block_size - len(ids))
        stream = _Stream(request, ids, max(0, limit), self.device)
        if stream.limit == 0:  # prompt fills the context: nothing computed, nothing generated
            stream.finish = ["length"] * request.n
        seed = request.seed if request.seed is not None else self._seeds.getrandbits(63)
        stream.generator.manual_seed(seed)
        return stream

    def _prefill(self, streams: list[_Stream]) -> None:
        """Compute each prompt past its longest cached prefix; bucket equal lengths into one forward."""
        buckets: dict[int, list[tuple[_Stream, GroupCache]]] = {}  # new positions -> (stream, its group)
        for s in streams:
            prompt_len = len(s.prompt_ids)
            s.entry = self.cache.lookup(s.prompt_ids)
            if s.entry is not None and len(s.entry.tokens) == prompt_len and s.entry.next_logits is not None:
                s.num_cached = prompt_len  # seen before, logits and all: nothing to compute
                self._start_decoding(s, s.entry.next_logits.unsqueeze(0))
                continue
            if s.entry is not None and len(s.entry.tokens) == prompt_len:
                s.entry = self.cache.lookup(s.prompt_ids, max_len=prompt_len - 1)
            s.num_cached = len(s.entry.tokens) if s.entry is not None else 0
            group = self._group_after(s.entry, 1, prompt_len - s.num_cached)
            buckets.setdefault(prompt_len - s.num_cached, []).append((s, group))
        for members in buckets.values():
            idx = torch.tensor([s.prompt_ids[s.num_cached:] for s, _ in members], device=self.device)  # (R, T)
            logits = self.model.forward_groups(idx, [g for _, g in members])[:, -1]  # (R, V)
            for row, (s, group) in enumerate(members):
                k, v = group.row_suffix(0)  # (L, nh, T, hs) the prompt's new positions
                s.entry = self.cache.insert(tuple(s.prompt_ids), s.entry, k, v, next_logits=logits[row].clone())
                self._start_decoding(s, logits[row:row + 1])

    def _start_decoding(self, s: _Stream, logits: torch.Tensor) -> None:
        """The n samples of ``s`` as one group over the prompt's KV; logits (1, V) after the prompt."""
        full_k, full_v, _ = s.entry.full()  # (L, nh, P, hs)
        s.group = GroupCache(full_k, full_v, s.request.n, s.limit)
        s.logits = logits.expand(s.request.n, -1)  # (n, V)

    def _group_after(self, entry: CacheEntry | None, num_rows: int, capacity: int) -> GroupCache:
        if entry is None:
            c = self.model.config
            return GroupCache.empty(c.n_layer, c.n_head, c.n_embd // c.n_head, num_rows, capacity,
                                    device=self.device)
        k, v, _ = entry.full()
        return GroupCache(k, v, num_rows, capacity)

    def _sample_step(self, s: _Stream) -> None:
        """Draw the next token of every active sample of ``s``; retire the finished ones."""
        logits = s.logits.clone()  # (n_active, V)
        logits[:, [PAD_ID, BOS_ID]] = float("-inf")  # never targets in training; never emitted
        req = s.request
        tokens, logprobs = sample(logits, req.temperature, 0, req.top_p, s.generator,
                                  kernels=self.kernels)  # (n_active,)
        keep = []
        for row, (i, tok, lp) in enumerate(zip(s.active, tokens.tolist(), logprobs.tolist())):
            s.token_ids[i].append(tok)
            s.logprobs[i] += lp
            if self._finished(s, i, tok):
                self._cache_sample(s, i, row, s.logits[row])
            else:
                keep.append(row)
        if len(keep) < len(s.active):
            s.active = [s.active[row] for row in keep]
            if keep:
                s.group.keep_rows(keep)

    def _finished(self, s: _Stream, i: int, tok: int) -> bool:
        if tok == EOS_ID:
            s.finish[i] = "stop"
            return True
        s.texts[i] += self.tokenizer.decode([tok])
        for stop in s.request.stop:
            if stop and s.texts[i].endswith(stop):
                s.texts[i] = s.texts[i][:-len(stop)]
                s.finish[i] = "stop"
                return True
        if len(s.token_ids[i]) >= s.limit:
            s.finish[i] = "length"
            return True
        return False

    def _cache_sample(self, s: _Stream, i: int, row: int, logits: torch.Tensor) -> None:
        """Keep a finished sample's KV: its fed tokens are all it drew but the last."""
        if s.group.length == 0:
            return
        k, v = s.group.row_suffix(row)  # (L, nh, S, hs)
        self.cache.insert(tuple(s.prompt_ids + s.token_ids[i][:-1]), s.entry, k, v,
                          next_logits=logits.clone())

    def _decode_step(self, streams: list[_Stream]) -> None:
        """Feed every active sample's last token through the model, batched over all groups."""
        last = [[s.token_ids[i][-1]] for s in streams for i in s.active]
        idx = torch.tensor(last, device=self.device)  # (R, 1)
        logits = self.model.forward_groups(idx, [s.group for s in streams])[:, -1]  # (R, V)
        row = 0
        for s in streams:
            s.logits = logits[row:row + len(s.active)]
            row += len(s.active)
