"""Batched step scoring with the process reward model, with a prefix cache.

The paths of one score request usually share a long prefix: the prompt and the
steps of their common ancestor. Each request is scored in two stages:
1. The longest prefix common to all its paths is looked up in the prefix cache
   (which keeps the PRM's per-position scores beside the keys and values); only
   the positions past the cached part are computed.
2. Each path is looked up again on its own (a child's path extends its parent's,
   scored earlier); the paths continuing the same cached entry run as one group
   over it, through ``shared_prefix_attention``.
Every path's KV and scores then go into the cache, so scoring a child later
computes only the child's new step. Keys and values stay on the model's device;
scores come back to the host once per forward, since results are read one by one.
"""

from __future__ import annotations

import torch

from ponder.models.kv_cache import GroupCache
from ponder.models.prefix_cache import DEFAULT_CACHE_TOKENS, CacheEntry, PrefixCache
from ponder.models.tokenizer import PAD_ID, CharTokenizer
from ponder.models.verifier import ProcessRewardModel
from ponder.search.messages import ScoreRequest, ScoreResult


class _Job:
    """One score request on its way through the two stages."""

    def __init__(self, request: ScoreRequest, tokenizer: CharTokenizer, block_size: int, delimiter: str):
        self.request = request
        self.paths: list[list[int]] = []  # per path: token ids (cut at block_size)
        self.ends: list[list[int]] = []  # per path: position of each step's closing delimiter
        prompt = tokenizer.encode(request.prompt, bos=True)
        for steps in request.paths:
            ids, ends = list(prompt), []
            for step in steps:
                ids += tokenizer.encode(step + delimiter)
                ends.append(len(ids) - 1)
            self.paths.append(ids[:block_size])
            self.ends.append(ends)
        self.common = _common_prefix_len(self.paths)
        self.num_cached = 0  # positions of the common prefix found in the cache
        self.entry: CacheEntry | None = None  # the common prefix's entry once computed
        self.path_entries: list[CacheEntry | None] = [None] * len(self.paths)  # longest cached prefix
        self.suffix_scores: list[torch.Tensor | None] = [None] * len(self.paths)  # (S_i,) past it

    def matched(self, i: int) -> int:
        entry = self.path_entries[i]
        return len(entry.tokens) if entry is not None else 0

    def result(self) -> ScoreResult:
        step_scores = []
        for i, ends in enumerate(self.ends):
            start = self.matched(i)
            cached = self.path_entries[i].full()[2] if start else None  # (start,)
            scores = []
            for e in ends:
                if e >= len(self.paths[i]):
                    scores.append(0.0)  # past the model's context: never trust it
                elif e < start:
                    scores.append(float(cached[e]))
                else:
                    scores.append(float(self.suffix_scores[i][e - start]))
            step_scores.append(scores)
        total = sum(len(p) for p in self.paths)
        computed = (self.common - self.num_cached) + sum(len(p) - self.matched(i) for i, p in enumerate(self.paths))
        return ScoreResult(self.request.request_id, step_scores, num_prompt_tokens=total,
                           num_cached_prompt_tokens=total - computed)


def _common_prefix_len(paths: list[list[int]]) -> int:
    if not paths:
        return 0
    first, length = paths[0], min(len(p) for p in paths)
    for i in range(length):
        if any(p[i] != first[i] for p in paths):
            return i
    return length


class BatchScorer:
    """Scores every step of many paths at once with a ``ProcessRewardModel``.

    Args:
        model: the PRM (put in eval mode).
        tokenizer: its tokenizer.
        max_cache_tokens: prefix-cache size in positions (0 turns caching off).
        delimiter: what closes each step (the step's score is read there).
        kernels: attention kernel path, ``"auto"``, ``"torch"`` or ``"triton"``
            (``ponder.kernels.select``); the model runs where its weights are.

    Raises:
        ValueError: ``kernels`` cannot run on the model's device.
    """

    def __init__(self, model: ProcessRewardModel, tokenizer: CharTokenizer,
                 max_cache_tokens: int = DEFAULT_CACHE_TOKENS, delimiter: str = "\n",
                 kernels: str = "auto"):
        self.model = model.eval()
        self.model.transformer.use_kernels(kernels)
        self.device = self.model.transformer.wte.weight.device
        self.tokenizer = tokenizer
        self.cache = PrefixCache(max_cache_tokens)
        self.delimiter = delimiter

    @torch.no_grad()
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Step scores in [0, 1] for every path of every request; one result per request, in order.

        Raises:
            ValueError: a prompt or step with a character outside the model's alphabet.
        """
        jobs = [_Job(r, self.tokenizer, self.model.config.block_size, self.delimiter) for r in requests]
        live = [j for j in jobs if j.paths]
        self._common_stage(live)
        self._suffix_stage(live)
        return [j.result() for j in jobs]

    def _group_over(self, entry: CacheEntry | None, num_rows: int, capacity: int) -> GroupCache:
        if entry is None:
            c = self.model.config
            return GroupCache.empty(c.n_layer, c.n_head, c.n_embd // c.n_head, num_rows, capacity,
                                    device=self.device)
        k, v, _ = entry.full()
        return GroupCache(k, v, num_rows, capacity)

    def _common_stage(self, jobs: list[_Job]) -> None:
        buckets: dict[int, list[tuple[_Job, GroupCache]]] = {}  # new positions -> (job, its group)
        for j in jobs:
            key = j.paths[0][:j.common]
            j.entry = self.cache.lookup(key, max_len=j.common)
            j.num_cached = len(j.entry.tokens) if j.entry is not None else 0
            if j.num_cached < j.common:
                group = self._group_over(j.entry, 1, j.common - j.num_cached)
                buckets.setdefault(j.common - j.num_cached, []).append((j, group))
        for _, members in buckets.items():
            idx = torch.tensor([j.paths[0][j.num_cached:j.common] for j, _ in members], device=self.device)  # (R, T)
            scores = self.model.forward_groups(idx, [g for _, g in members]).cpu()  # (R, T); no-op on CPU
            for row, (j, group) in enumerate(members):
                k, v = group.row_suffix(0)  # (L, nh, T, hs)
                j.entry = self.cache.insert(tuple(j.paths[0][:j.common]), j.entry, k, v, scores[row].clone())

    def _suffix_stage(self, jobs: list[_Job]) -> None:
        """Each path past its own longest cached prefix; paths over the same entry form one group."""
        buckets: dict[int, list[tuple[_Job, list[int], GroupCache]]] = {}  # width -> (job, paths, group)
        for j in jobs:
            by_entry: dict[int, list[int]] = {}  # id(entry) -> indices of paths continuing it
            for i, path in enumerate(j.paths):
                j.path_entries[i] = self.cache.lookup(path) or j.entry
                if j.matched(i) < len(path):
                    by_entry.setdefault(id(j.path_entries[i]), []).append(i)
            for members in by_entry.values():
                entry = j.path_entries[members[0]]
                width = max(len(j.paths[i]) for i in members) - j.matched(members[0])
                group = self._group_over(entry, len(members), width)
                buckets.setdefault(width, []).append((j, members, group))
        for width, groups in buckets.items():
            # Padding sits after each path's last token, so causal attention keeps it out of real positions.
            rows = [j.paths[i][j.matched(i):] + [PAD_ID] * (width - len(j.paths[i]) + j.matched(i))
                    for j, members, _ in groups for i in members]
            idx = torch.tensor(rows, device=self.device)  # (R, width)
            scores = self.model.forward_groups(idx, [g for _, _, g in groups]).cpu()  # (R, width); no-op on CPU
            row = 0
            for j, members, group in groups:
                for r, i in enumerate(members):
                    own = len(j.paths[i]) - j.matched(i)
                    j.suffix_scores[i] = scores[row + r, :own].clone()  # (own,)
                    k, v = group.row_suffix(r, own)  # (L, nh, own, hs)
                    self.cache.insert(tuple(j.paths[i]), j.path_entries[i], k, v, j.suffix_scores[i])
                row += len(members)
