"""Saving and loading the embedded models: ``<name>.safetensors`` plus ``<name>.json``.

The json holds the model config, the tokenizer alphabet and how the weights were
trained, so a checkpoint is self-describing and loads with no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ponder.models.gpt import GPT, GPTConfig
from ponder.models.tokenizer import CharTokenizer

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATOR_NAME = "generator"
VERIFIER_NAME = "verifier"


def save_model(model: torch.nn.Module, tokenizer: CharTokenizer, out_dir: str | Path, name: str,
               info: dict | None = None) -> Path:
    """Write ``out_dir/name.safetensors`` and ``out_dir/name.json``; return the weights path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Tied weights share storage; safetensors wants each tensor once and contiguous.
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"{name}.safetensors"))
    meta = {"config": model.config.to_dict(), "tokenizer": tokenizer.to_dict(), "info": info or {}}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out / f"{name}.safetensors"


def read_meta(weights_dir: str | Path, name: str) -> dict:
    """The json beside a checkpoint.

    Raises:
        FileNotFoundError: if the checkpoint is missing (the message says how to make one).
    """
    path = Path(weights_dir) / f"{name}.json"
    if not path.exists() or not (Path(weights_dir) / f"{name}.safetensors").exists():
        raise FileNotFoundError(f"no embedded {name} checkpoint in {weights_dir}; "
                                f"train one with `ponder train --out {weights_dir}`")
    return json.loads(path.read_text())


def load_state(model: torch.nn.Module, weights_dir: str | Path, name: str) -> torch.nn.Module:
    model.load_state_dict(load_file(str(Path(weights_dir) / f"{name}.safetensors")))
    return model.eval()


def load_generator(weights_dir: str | Path = WEIGHTS_DIR) -> tuple[GPT, CharTokenizer]:
    """The generator and its tokenizer from ``weights_dir`` (default: the shipped weights).

    Raises:
        FileNotFoundError: if the directory has no generator checkpoint.
    """
    meta = read_meta(weights_dir, GENERATOR_NAME)
    model = GPT(GPTConfig(**meta["config"]))
    return load_state(model, weights_dir, GENERATOR_NAME), CharTokenizer.from_dict(meta["tokenizer"])


def load_verifier(weights_dir: str | Path = WEIGHTS_DIR):
    """The process reward model and its tokenizer from ``weights_dir`` (default: shipped).

    Raises:
        FileNotFoundError: if the directory has no verifier checkpoint.
    """
    from ponder.models.verifier import ProcessRewardModel

    meta = read_meta(weights_dir, VERIFIER_NAME)
    model = ProcessRewardModel(GPTConfig(**meta["config"]))
    return load_state(model, weights_dir, VERIFIER_NAME), CharTokenizer.from_dict(meta["tokenizer"])
