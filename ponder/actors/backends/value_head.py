"""A value-head PRM for transformers: a causal LM's backbone and one linear unit per token.

Skywork-o1-Open-PRM (SkyworkAI/skywork-o1-prm-inference, ``model_utils/prm_model.py``)
is a Qwen2 causal LM saved with an extra ``v_head.summary`` = Linear(hidden, 1)
applied to the last hidden state; its checkpoint's architecture is
``Qwen2ForPrmModel``, which transformers does not know. This module loads the
backbone with ``AutoModel`` (the LM head is not needed) and the value head from
the checkpoint's own tensors, so no remote code runs.

torch and transformers are imported at the top: only the hf verifier imports this.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel

HEAD_PREFIX = "v_head.summary."


class ValueHeadPRM(torch.nn.Module):
    """Backbone + Linear(hidden, 1): ``forward`` returns the raw value at every position.

    Args:
        backbone: a transformers base model (returns ``last_hidden_state``).
        head: the value head, Linear(hidden_size, 1).
    """

    def __init__(self, backbone, head: torch.nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.v_head = head

    @property
    def config(self):
        return self.backbone.config

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        # The head stays float32 whatever the backbone's dtype: Skywork's wrapper builds
        # it in torch's default dtype and casts the hidden state to it.
        return self.v_head(hidden.to(self.v_head.weight.dtype)).squeeze(-1)  # (B, T)


def read_value_head(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``v_head.summary`` tensors of a checkpoint, without loading its other weights.

    Reads safetensors or PyTorch ``.bin`` files, single or sharded (through the index).

    Returns:
        ``{"weight": (1, H), "bias": (1,)}`` (bias absent when the head has none).

    Raises:
        ValueError: no value-head weights in the checkpoint (not a value-head PRM).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    if name.startswith(HEAD_PREFIX):
                        tensors[name[len(HEAD_PREFIX):]] = f.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            tensors.update({k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)})
    if "weight" not in tensors:
        raise ValueError(f"no {HEAD_PREFIX}weight in the checkpoint at {str(path)!r}: not a value-head PRM "
                         "(Skywork layout); choose another verifier.kwargs.prm")
    return tensors


def _weight_files(path: Path) -> list[Path]:
    """The weight files that may hold the head: the shard the index names, else every file."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]  # tensor name -> shard file
            return sorted({path / f for name, f in weight_map.items() if name.startswith(HEAD_PREFIX)})
    files = sorted(path.glob("*.safetensors"))
    return files or sorted(path.glob("*.bin"))


def load_value_head_prm(path: str, dtype: torch.dtype, trust_remote_code: bool = False) -> ValueHeadPRM:
    """The backbone (``AutoModel``, the checkpoint's ``model.*`` tensors) and its value head.

    Raises:
        ValueError: the checkpoint has no value-head weights.
    """
    head_tensors = read_value_head(path)
    backbone = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype,
                                         trust_remote_code=trust_remote_code)
    weight = head_tensors["weight"]  # (1, H)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in head_tensors)
    head.load_state_dict(head_tensors)
    return ValueHeadPRM(backbone, head.float())
