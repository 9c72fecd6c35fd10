"""An LRU cache of computed keys and values, keyed by the token ids they belong to.

Tree search asks for the same prefixes again and again: a child's prompt is its
parent's prompt plus the step the parent's expansion just generated. Entries
form chains: a sample's entry holds only the keys and values of its own tokens
and points to its prompt's entry, so n samples of one prompt store the prompt once.
A lookup returns the longest cached prefix of the asked-for tokens.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

DEFAULT_CACHE_TOKENS = 262_144
"""Default capacity in positions: at 2 x n_layer x n_embd floats a position (4 KiB for the
shipped 4 x 128 models) at most 1 GiB. A job grows many trees at once and each keeps its
frontier's prefixes warm; a cache too small for all of them evicts prefixes that are about
to be extended again, and every miss is paid from the problem's FLOP budget."""


class CacheEntry:
    """KV of ``tokens[start:]``; the positions before ``start`` live in ``parent``."""

    __slots__ = ("tokens", "parent", "start", "k", "v", "values", "next_logits")

    def __init__(self, tokens: tuple[int, ...], parent: "CacheEntry | None", k: torch.Tensor,
                 v: torch.Tensor, values: torch.Tensor | None = None,
                 next_logits: torch.Tensor | None = None):
        self.tokens = tokens
        self.parent = parent
        self.start = parent_len = len(parent.tokens) if parent is not None else 0
        assert k.shape[2] == len(tokens) - parent_len, "entry KV must cover exactly its own tokens"
        self.k = k  # (L, nh, own positions, hs)
        self.v = v  # (L, nh, own positions, hs)
        self.values = values  # (own positions,) a head's outputs (the PRM's scores), if kept
        self.next_logits = next_logits  # (V,) the generator's logits after the last position, if kept

    def full(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Keys (L, nh, len, hs), values (L, nh, len, hs) and head outputs (len,) of all positions."""
        chain = []
        entry = self
        while entry is not None:
            chain.append(entry)
            entry = entry.parent
        chain.reverse()
        k = torch.cat([e.k for e in chain], dim=2) if len(chain) > 1 else self.k
        v = torch.cat([e.v for e in chain], dim=2) if len(chain) > 1 else self.v
        values = None
        if all(e.values is not None for e in chain):
            values = torch.cat([e.values for e in chain]) if len(chain) > 1 else self.values
        return k, v, values


class PrefixCache:
    """Token-keyed LRU of KV entries, bounded by the number of positions stored.

    Args:
        max_num_tokens: evict least recently used entries beyond this many own positions.
    """

    def __init__(self, max_num_tokens: int = DEFAULT_CACHE_TOKENS):
        self.max_num_tokens = max_num_tokens
        self.num_tokens = 0
        self._entries: OrderedDict[tuple[int, ...], CacheEntry] = OrderedDict()  # token ids -> entry
        self.num_hits = 0
        self.num_hit_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.num_tokens = 0

    def lookup(self, tokens: list[int] | tuple[int, ...], max_len: int | None = None) -> CacheEntry | None:
        """The entry of the longest cached prefix of ``tokens`` no longer than ``max_len``."""
        key = tuple(tokens)
        for length in range(min(len(key), len(key) if max_len is None else max_len), 0, -1):
            entry = self._entries.get(key[:length])
            if entry is not None:
                self._entries.move_to_end(entry.tokens)
                self.num_hits += 1
                self.num_hit_tokens += length
                return entry
        return None

    def insert(self, tokens: tuple[int, ...], parent: CacheEntry | None, k: torch.Tensor,
               v: torch.Tensor, values: torch.Tensor | None = None,
               next_logits: torch.Tensor | None = None) -> CacheEntry:
        """Cache the KV of ``tokens[len(parent.tokens):]`` (the rest is ``parent``'s); return the entry."""
        existing = self._entries.get(tokens)
        if existing is not None:
            self._entries.move_to_end(tokens)
            if existing.next_logits is None:
                existing.next_logits = next_logits
            return existing
        entry = CacheEntry(tokens, parent, k, v, values, next_logits)
        if self.max_num_tokens <= 0:
            return entry  # caching off: the entry still serves this one call
        self._entries[tokens] = entry
        self.num_tokens += len(tokens) - entry.start
        while self.num_tokens > self.max_num_tokens and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            self.num_tokens -= len(old.tokens) - old.start
        return entry
