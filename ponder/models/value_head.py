"""A value head: P(the path ends right) from a frozen generator's hidden state at a step's end.

Where no PRM exists for a generator, the data flywheel learns a small verifier on the
generator's own states (``ponder train-verifier --config``, ``ponder.models.head_train``).
The head standardizes the state with the training set's mean and scale (hidden
states have a few dimensions far larger than the rest, which a plain linear layer
trained briefly would follow), then applies a linear layer or a one-hidden-layer MLP.

On disk, in one folder: ``value_head.safetensors`` (the module's state) and
``value_head.json`` (``HeadMeta``: the base model's fingerprint, the hidden size and
layer read, the step delimiter, and the training figures).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_FILE = "value_head.safetensors"
META_FILE = "value_head.json"
FORMAT_VERSION = 1


@dataclass
class HeadMeta:
    """What a saved head needs to be read the way it was trained.

    Attributes:
        hidden_size: width of the states it reads.
        mlp_hidden: width of its hidden layer; 0 for a linear head.
        layer: the hidden state read (-1: the final normed one; else an index into
            ``hidden_states``, 0 = embeddings).
        delimiter: the task's step delimiter, written after every step (``render_path``).
        base: the base model's fingerprint (``hidden_states.fingerprint``).
        training: figures and settings of the run that trained it.
        format: the on-disk version.
    """

    hidden_size: int
    mlp_hidden: int = 0
    layer: int = -1
    delimiter: str = "\n"
    base: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION


class ValueHead(nn.Module):
    """Standardize, then a linear layer or ``Linear -> GELU -> Linear``, to one logit a state.

    Args:
        hidden_size: the base model's hidden size H.
        mlp_hidden: the MLP's width; 0 for a linear head.
    """

    def __init__(self, hidden_size: int, mlp_hidden: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden_size))  # (H,)
        self.register_buffer("scale", torch.ones(hidden_size))  # (H,) 1 / std
        if mlp_hidden:
            self.net = nn.Sequential(nn.Linear(hidden_size, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 1))
        else:
            self.net = nn.Linear(hidden_size, 1)

    def fit_scaler(self, states: torch.Tensor) -> None:
        """Set the standardization from training states ``(N, H)``."""
        self.mean.copy_(states.mean(0))
        self.scale.copy_(1.0 / (states.std(0) + 1e-4))  # a constant dimension stays finite

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``(N, H)`` states -> ``(N,)`` logits of P(right)."""
        return self.net((states - self.mean) * self.scale).squeeze(-1)


def save_head(head: ValueHead, meta: HeadMeta, out_dir: str | Path) -> Path:
    """Write ``value_head.safetensors`` and ``value_head.json`` into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / META_FILE).write_text(json.dumps(asdict(meta), indent=2) + "\n")
    return out


def load_head(path: str | Path) -> tuple[ValueHead, HeadMeta]:
    """A saved head in eval mode and its meta, from its folder (or its JSON / safetensors file).

    Raises:
        FileNotFoundError: the folder lacks either file.
        ValueError: a format this version cannot read.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    for name in (WEIGHTS_FILE, META_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"value head {str(path)!r}: no {name} in {folder} "
                                    f"(train one with `ponder train-verifier --config ...`)")
    raw = json.loads((folder / META_FILE).read_text())
    if raw.get("format") != FORMAT_VERSION:
        raise ValueError(f"value head {folder}: format {raw.get('format')!r}, this ponder reads "
                         f"{FORMAT_VERSION}")
    meta = HeadMeta(**raw)
    head = ValueHead(meta.hidden_size, meta.mlp_hidden)
    head.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return head.eval(), meta


def check_base(meta: HeadMeta, fingerprint: dict[str, Any], hidden_size: int) -> None:
    """Refuse a head trained on another base model: its scores would mean nothing.

    Raises:
        ValueError: naming what differs (hidden size, GGUF file or weight bytes).
    """
    if meta.hidden_size != hidden_size:
        raise ValueError(f"value head reads hidden size {meta.hidden_size}, the model has {hidden_size}")
    for key in ("gguf_file", "weights_bytes"):
        want, have = meta.base.get(key), fingerprint.get(key)
        if want is not None and want != have:
            raise ValueError(f"value head was trained on {meta.base.get('model')} with {key} "
                             f"{want!r}; this model has {have!r} (train one for it)")
