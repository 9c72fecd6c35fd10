"""The KV cache of one group of sibling rows that continue one shared prefix.

The prefix keys and values are stored once for the whole group, shape
``(n_layer, nh, P, hs)``; each row owns a preallocated suffix buffer for the
tokens it adds itself, ``(n_layer, n, nh, capacity, hs)``. This is the layout
``shared_prefix_attention`` reads, so n siblings never copy their prefix.
"""

from __future__ import annotations

import torch


class GroupCache:
    """Keys and values of ``num_rows`` rows sharing a prefix, plus each row's own suffix.

    Args:
        prefix_k: (n_layer, nh, P, hs) keys of the shared prefix (P may be 0).
        prefix_v: (n_layer, nh, P, hs) values of the shared prefix.
        num_rows: how many rows continue the prefix.
        capacity: the most suffix positions any row will add.
    """

    def __init__(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, num_rows: int, capacity: int):
        n_layer, nh, _, hs = prefix_k.shape
        self.prefix_k = prefix_k  # (L, nh, P, hs)
        self.prefix_v = prefix_v  # (L, nh, P, hs)
        shape = (n_layer, num_rows, nh, capacity, hs)
        self.suffix_k = torch.empty(shape, dtype=prefix_k.dtype, device=prefix_k.device)  # (L, n, nh, cap, hs)
        self.suffix_v = torch.empty(shape, dtype=prefix_k.dtype, device=prefix_k.device)
        self.length = 0  # suffix positions filled (the same for every row)

    @classmethod
    def empty(cls, n_layer: int, n_head: int, head_size: int, num_rows: int, capacity: int,
              dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> "GroupCache":
        """A group with no prefix: every position is a suffix position."""
        prefix = torch.empty((n_layer, n_head, 0, head_size), dtype=dtype, device=device)
        return cls(prefix, prefix, num_rows, capacity)

    @property
    def num_rows(self) -> int:
        return self.suffix_k.shape[1]

    @property
    def prefix_len(self) -> int:
        return self.prefix_k.shape[2]

    @property
    def next_position(self) -> int:
        """Absolute position of the next token every row adds."""
        return self.prefix_len + self.length

    def prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prefix_k[layer], self.prefix_v[layer]  # (nh, P, hs)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (n, nh, T, hs) after the filled suffix of ``layer``; return the suffix so far.

        The length only moves on ``advance`` once every layer has appended.
        """
        end = self.length + k.shape[2]
        if end > self.suffix_k.shape[3]:
            raise ValueError(f"suffix cache full: {end} positions > capacity {self.suffix_k.shape[3]}")
        self.suffix_k[layer, :, :, self.length:end] = k
        self.suffix_v[layer, :, :, self.length:end] = v
        return self.suffix_k[layer, :, :, :end], self.suffix_v[layer, :, :, :end]  # (n, nh, S, hs)

    def advance(self, num_positions: int) -> None:
        self.length += num_positions

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every row not in ``rows`` (finished samples), keeping their order."""
        index = torch.tensor(rows, dtype=torch.long, device=self.suffix_k.device)
        self.suffix_k = self.suffix_k.index_select(1, index)
        self.suffix_v = self.suffix_v.index_select(1, index)

    def row_suffix(self, row: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one row's first ``length`` suffix keys and values, (L, nh, S, hs) each."""
        end = self.length if length is None else length
        return self.suffix_k[:, row, :, :end].clone(), self.suffix_v[:, row, :, :end].clone()

    def full_kv(self, row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix plus one row's suffix as contiguous (L, nh, P + S, hs) keys and values."""
        k_suffix, v_suffix = self.suffix_k[:, row, :, :self.length], self.suffix_v[:, row, :, :self.length]
        return torch.cat([self.prefix_k, k_suffix], dim=2), torch.cat([self.prefix_v, v_suffix], dim=2)
