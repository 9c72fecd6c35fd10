"""A transformers KV cache that is allocated once per batch and filled in place.

transformers' ``DynamicCache`` appends every decoded token with ``torch.cat``,
copying each layer's whole cache at every step, so a decode of T tokens moves
O(T^2) bytes; a ``StaticCache`` avoids the copies but attends over its full
length from the first step. This cache allocates each layer's keys and values
for the batch's longest sequence once and hands attention a view of the filled
part, so a step writes one position and reads only what is there.

It plugs into a ``DynamicCache`` by swapping its layers, which keeps the rest of
transformers' cache interface (masks, ``get_seq_length``, ``reorder_cache``).
torch and transformers are imported at the top: only the hf backend imports this.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers of ``capacity`` positions, grown only past it."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0  # positions filled

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, _ = key_states.shape
        capacity = max(self.capacity, key_states.shape[-2])
        self._keys = key_states.new_empty((batch, heads, capacity, key_states.shape[-1]))  # (B, H, C, D)
        self._values = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))  # (B, H, C, D)
        self.device = key_states.device
        self.length = 0
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # a caller went past the planned length: grow, rarely
            self._grow(end)
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]  # (B, H, T, D) views
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep (or repeat) the rows ``beam_idx``: copies only the filled positions."""
        if not self.is_initialized:
            return
        index = beam_idx.to(self.device)
        keys = self._keys.new_empty((len(index), *self._keys.shape[1:]))  # (B', H, C, D)
        values = self._values.new_empty((len(index), *self._values.shape[1:]))  # (B', H, C, D)
        keys[:, :, :self.length] = self._keys[index, :, :self.length]
        values[:, :, :self.length] = self._values[index, :, :self.length]
        self._keys, self._values = keys, values
        self.keys, self.values = keys[:, :, :self.length], values[:, :, :self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def _grow(self, end: int) -> None:
        capacity = max(end, 2 * self._keys.shape[-2])
        self._keys, self._values = (_extended(t, capacity) for t in (self._keys, self._values))


def _extended(buffer: torch.Tensor, capacity: int) -> torch.Tensor:
    grown = buffer.new_empty((*buffer.shape[:2], capacity, buffer.shape[-1]))  # (B, H, C', D)
    grown[:, :, :buffer.shape[2]] = buffer
    return grown


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """A DynamicCache whose layers hold ``capacity`` positions each (prompt plus new tokens).

    Falls back to a plain DynamicCache for models whose cache layers are not plain
    full-attention layers (sliding windows, linear attention), which keep their own.
    """
    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [PreallocatedLayer(capacity) for _ in layers]
    return cache
