"""Kernels for tree expansion: shared-prefix (cascade) attention and fused sampling.

Each public function has a torch reference (any device) and a Triton version
(CUDA tensors, when triton imports); the public name dispatches by device.
triton is imported lazily, so importing this package never needs it.
"""

from __future__ import annotations

import functools


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (it is only used for CUDA tensors)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


from ponder.kernels.prefix_attention import (  # noqa: E402
    merge_attention_states,
    shared_prefix_attention,
    shared_prefix_attention_torch,
)
from ponder.kernels.sampling import sample, sample_torch, sampling_probs  # noqa: E402

__all__ = [
    "merge_attention_states",
    "sample",
    "sample_torch",
    "sampling_probs",
    "shared_prefix_attention",
    "shared_prefix_attention_torch",
    "triton_available",
]
