"""Where the embedded models run: the device, and which kernel path (torch or Triton) they use.

Two knobs, both backend kwargs (``generator.kwargs`` / ``verifier.kwargs``):
- ``device``: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
- ``kernels``: ``auto`` (Triton for CUDA tensors when triton imports, else the torch
  reference), ``torch`` (the reference on any device) or ``triton`` (CUDA only; also CPU
  tensors under ``TRITON_INTERPRET=1``, as the kernel tests use it).
Asking for what this machine cannot do fails here, at construction, with a message
that names the knob, rather than deep inside a forward pass.
"""

from __future__ import annotations

import functools
import os

import torch

DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" is accepted too
KERNEL_PATHS = ("auto", "torch", "triton")

__all__ = ["DEVICES", "KERNEL_PATHS", "resolve_device", "resolve_kernels", "triton_available"]


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (it is only used for CUDA tensors)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device that ``device`` names.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a torch.device).

    Returns:
        ``cuda`` for ``auto`` when ``torch.cuda.is_available()``, else ``cpu``.

    Raises:
        ValueError: an unknown name, or CUDA asked for where torch sees no GPU.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no GPU (torch {torch.__version__}, "
                         f"cuda {torch.version.cuda}); use device: auto or cpu")
    return torch.device(name)


def resolve_kernels(kernels: str, device: str | torch.device) -> str:
    """The kernel path, ``"torch"`` or ``"triton"``, that ``kernels`` means on ``device``.

    Args:
        kernels: ``"auto"``, ``"torch"`` or ``"triton"``.
        device: where the tensors live.

    Returns:
        ``"triton"`` for ``auto`` on CUDA when triton imports, ``"torch"`` otherwise.

    Raises:
        ValueError: an unknown path, or ``triton`` where it cannot run (no triton,
            or not CUDA and not ``TRITON_INTERPRET=1``).
    """
    if kernels == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if kernels == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if kernels != "triton":
        raise ValueError(f"kernels must be one of {', '.join(KERNEL_PATHS)}, got {kernels!r}")
    if not triton_available():
        raise ValueError("kernels='triton' but triton does not import here; use kernels: auto or torch")
    if not on_cuda and not _interpreting():
        raise ValueError(f"kernels='triton' needs a CUDA device, got {str(device)!r} "
                         "(or TRITON_INTERPRET=1); use kernels: auto or torch")
    return "triton"
