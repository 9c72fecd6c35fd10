"""Choosing the device and the kernel path (torch or Triton), and the kernels' import graph.

These run without a GPU: CUDA and triton are faked where a test needs them, and a
fake is only consulted, never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import ponder.kernels.select as select
from ponder.kernels import resolve_device, resolve_kernels, sample, shared_prefix_attention

KERNELS_DIR = Path(select.__file__).parent


def _kernel_imports(path: Path) -> set[str]:
    """Modules of ponder.kernels that ``path`` imports anywhere (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ponder.kernels"):
            if node.module == "ponder.kernels":  # `from ponder.kernels import x` may name a submodule
                found |= {f"ponder.kernels.{a.name}" for a in node.names if (KERNELS_DIR / f"{a.name}.py").exists()}
                found.add("ponder.kernels")
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ponder.kernels")}
    return found


def test_kernel_modules_import_each_other_without_cycles():
    graph = {}  # module -> ponder.kernels modules it imports
    for path in KERNELS_DIR.glob("*.py"):
        name = "ponder.kernels" if path.stem == "__init__" else f"ponder.kernels.{path.stem}"
        graph[name] = _kernel_imports(path) - {name}
    visiting, done = set(), set()

    def visit(module, trail):
        assert module not in visiting, f"import cycle: {' -> '.join(trail + [module])}"
        if module in done:
            return
        visiting.add(module)
        for dep in graph.get(module, ()):
            visit(dep, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
    # The Triton kernels read the shared helpers, never the references they are tested against.
    assert graph["ponder.kernels.triton_sampling"] == {"ponder.kernels.common"}
    assert graph["ponder.kernels.triton_prefix_attention"] == {"ponder.kernels.common"}


def test_device_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="sees no GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize("bad", ["gpu", "tpu", "cuda:x", ""])
def test_unknown_device_names_the_allowed_values(bad):
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        resolve_device(bad)


def test_kernel_path_choice(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(select, "triton_available", lambda: True)
    assert resolve_kernels("auto", "cuda") == "triton"
    assert resolve_kernels("auto", "cpu") == "torch"
    assert resolve_kernels("torch", "cuda") == "torch"
    assert resolve_kernels("triton", "cuda:0") == "triton"
    with pytest.raises(ValueError, match="kernels='triton' needs a CUDA device"):
        resolve_kernels("triton", "cpu")
    monkeypatch.setattr(select, "triton_available", lambda: False)
    assert resolve_kernels("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="triton does not import"):
        resolve_kernels("triton", "cuda")
    with pytest.raises(ValueError, match="kernels must be one of auto, torch, triton"):
        resolve_kernels("cutlass", "cpu")


def test_public_kernels_take_the_path_argument_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g = torch.Generator().manual_seed(0)
    q, ks, vs = (torch.randn(3, 2, 4, 16, generator=g) for _ in range(3))  # (n, H, T, D), (n, H, S, D)
    kp, vp = (torch.randn(2, 5, 16, generator=g) for _ in range(2))  # (H, P, D)
    assert torch.equal(shared_prefix_attention(q, kp, vp, ks, vs),
                       shared_prefix_attention(q, kp, vp, ks, vs, kernels="torch"))
    logits = torch.randn(4, 30, generator=g)  # (B, V)
    a = sample(logits, 0.8, 0, 0.9, torch.Generator().manual_seed(1))
    b = sample(logits, 0.8, 0, 0.9, torch.Generator().manual_seed(1), kernels="torch")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="triton"):
        shared_prefix_attention(q, kp, vp, ks, vs, kernels="triton")
    with pytest.raises(ValueError, match="triton"):
        sample(logits, kernels="triton")
    with pytest.raises(ValueError, match="kernels must be one of"):
        sample(logits, kernels="fast")
