"""Kernels for tree expansion: shared-prefix (cascade) attention and fused sampling.

Each public function has a torch reference (any device) and a Triton version
(CUDA tensors, when triton imports); the public name dispatches by device, or as
its ``kernels`` argument says (``ponder.kernels.select``). Imports run one way:
``common`` and ``select`` <- the torch references and the Triton kernels <- this
package. triton is imported lazily, so importing this package never needs it.
"""

from __future__ import annotations

from ponder.kernels.prefix_attention import (
    merge_attention_states,
    shared_prefix_attention,
    shared_prefix_attention_torch,
)
from ponder.kernels.sampling import sample, sample_torch, sampling_probs
from ponder.kernels.select import KERNEL_PATHS, resolve_device, resolve_kernels, triton_available

__all__ = [
    "KERNEL_PATHS",
    "merge_attention_states",
    "resolve_device",
    "resolve_kernels",
    "sample",
    "sample_torch",
    "sampling_probs",
    "shared_prefix_attention",
    "shared_prefix_attention_torch",
    "triton_available",
]
