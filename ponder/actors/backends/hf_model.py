"""Loading a transformers model and its tokenizer from a local folder or GGUF file.

What the hf generator and the hf verifier share: the dtype by name, the
tokenizer with a pad token, the model from a checkpoint folder or a ``.gguf``
file inside one (see ``checkpoint.py``), its FLOP spec and its EOS ids.
transformers is imported inside the loaders: it is optional for ponder as a
whole, and this module is only imported by the hf backends, which need torch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ponder.actors.backends.checkpoint import pretrained_kwargs, resolve_model_path
from ponder.search.flops import ModelSpec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name ("float32", "bfloat16", "float16").

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def load_tokenizer(path: str, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The checkpoint's tokenizer (or the GGUF file's), with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                              **pretrained_kwargs(gguf_file))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(auto_class, model_path: str | Path, gguf_file: str | None, dtype: str | torch.dtype,
               device: torch.device, trust_remote_code: bool = False):
    """A model in eval mode on ``device``, from a checkpoint folder or a GGUF file in ``model_path``.

    Args:
        auto_class: the transformers auto class to load with (e.g. AutoModelForCausalLM).

    Raises:
        ValueError: no such folder or GGUF file, or an unknown dtype.
    """
    path = resolve_model_path(model_path, gguf_file)
    model = auto_class.from_pretrained(path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
                                       **pretrained_kwargs(gguf_file))
    return model.to(device).eval()


def model_name(model_path: str | Path, gguf_file: str | None) -> str:
    """What a ModelSpec calls the model: the GGUF file's stem, else the folder's name."""
    return Path(gguf_file).stem if gguf_file else Path(model_path).expanduser().name


def spec_from_model(name: str, model) -> ModelSpec:
    """ModelSpec from a loaded model: non-embedding parameters, layers and width from its config.

    The output projection counts (it is a matmul on every token), also when its
    weight is tied to the input embedding, which does not (it is a lookup).
    """
    config = model.config.get_text_config()
    num_params = sum(p.numel() for p in model.parameters())  # unique tensors: a tied head once
    embed = model.get_input_embeddings().weight
    num_params -= embed.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is embed:
        num_params += embed.numel()
    return ModelSpec(name=name, num_params=num_params, num_layers=config.num_hidden_layers, d_model=config.hidden_size)


def eos_ids(model, tokenizer) -> set[int]:
    """Token ids that end a generation: the generation config's EOS ids, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
