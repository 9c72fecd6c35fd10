"""A frozen hf generator's hidden states at the end of each reasoning step.

A value head (``ponder.models.value_head``) reads one vector a step: the generator's
hidden state at the token that ends the step's delimiter, in the text the generator
itself continued. That text is rendered in one place, ``render_path``: the tree's
prompt, then every step followed by the task's step delimiter, exactly
``Tree.prefix`` of the path's leaf (what the hf generator was given to continue).
Training (``ponder train-verifier --config``) and scoring (the ``hf`` verifier with
``kwargs.value_head``) both call it, so the head never sees a layout it was not
trained on. A chat-template layout, if the generator gains one, belongs here too.

A step's position is the last token whose characters end at or before the end of the
step's delimiter. With a causal model, that token's state has read the step and its
delimiter and nothing after them, even when the tokenizer merges the delimiter with
the next step's first characters (then the state of the token before is read).

torch and transformers are imported lazily: this module is imported by the CLI.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "pkg:"  # model_path "pkg:NAME[/sub]": the folder of installed package NAME
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")  # files that make a checkpoint's fingerprint


def render_path(prompt: str, steps: list[str], delimiter: str) -> tuple[str, list[int]]:
    """The text a path is read from, and the character offset where each step's delimiter ends.

    Args:
        prompt: the tree's prompt (``trees.jsonl``'s ``prompt``, ``ScoreRequest.prompt``).
        steps: the path's steps, without delimiters.
        delimiter: the task's step delimiter.

    Returns:
        ``(text, ends)``: ``text == prompt + "".join(s + delimiter for s in steps)`` and
        ``text[:ends[j]]`` is the prompt through step j and its delimiter.
    """
    parts, ends, length = [prompt], [], len(prompt)
    for step in steps:
        parts.append(step + delimiter)
        length += len(step) + len(delimiter)
        ends.append(length)
    return "".join(parts), ends


def step_end_positions(offsets: list[tuple[int, int]], ends: list[int]) -> list[int]:
    """Index of the last token ending at or before each character offset in ``ends``.

    Args:
        offsets: ``(start, end)`` characters of every token (special tokens ``(0, 0)``).
        ends: increasing character offsets, from :func:`render_path`.

    Returns:
        One token index per offset; tokens without characters (specials) are never chosen.

    Raises:
        ValueError: an offset that no token ends at or before (an empty text).
    """
    positions, last, t = [], -1, 0
    for end in ends:
        # special tokens (BOS, EOS) carry no characters: they never end a step
        while t < len(offsets) and offsets[t][1] <= end:
            if offsets[t][1] > offsets[t][0]:
                last = t
            t += 1
        if last < 0:
            raise ValueError(f"no token ends at or before character {end}")
        positions.append(last)
    return positions


def encode_path(tokenizer: Any, prompt: str, steps: list[str], delimiter: str
                ) -> tuple[list[int], list[int]]:
    """Token ids of one path (as the generator tokenizes its prefix) and each step's position.

    Raises:
        ValueError: a slow tokenizer (no character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a value head needs a fast tokenizer (character offsets); this one is slow")
    text, ends = render_path(prompt, steps, delimiter)
    enc = tokenizer(text, return_offsets_mapping=True)  # special tokens as the generator adds them
    return list(enc["input_ids"]), step_end_positions(enc["offset_mapping"], ends)


def step_states(trunk: Any, batch: list[tuple[list[int], list[int]]], pad_id: int,
                layer: int = -1) -> list[Any]:
    """Hidden states at the step positions of a batch of encoded paths, one forward pass.

    Args:
        trunk: the transformer without its LM head (``model.base_model``).
        batch: ``(token ids, step positions)`` per path.
        pad_id: the padding token id.
        layer: -1 for the final (normed) hidden state, else an index into ``hidden_states``
            (0 = embeddings).

    Returns:
        One float32 ``(S, H)`` tensor per path, on the CPU.
    """
    import torch

    device = next(trunk.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(input_ids)  # (B, T) right padding: real tokens keep their positions
    for b, (ids, _) in enumerate(batch):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        mask[b, :len(ids)] = 1
    with torch.inference_mode():
        out = trunk(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                    output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]  # (B, T, H)
        return [hidden[b, positions].float().cpu() for b, (_, positions) in enumerate(batch)]  # (S, H)


def resolve_model_folder(model_path: str | Path) -> Path:
    """A model folder, with ``pkg:NAME[/sub]`` read as installed package NAME's folder.

    The package is found with ``importlib.util.find_spec``, never imported.

    Raises:
        ValueError: no such installed package, or the path is not a folder.
    """
    text = str(model_path)
    if text.startswith(PACKAGE_PREFIX):
        name, _, sub = text[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"model_path {text!r}: no installed package {name!r}")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        folder = Path(text).expanduser()
    if not folder.is_dir():
        raise ValueError(f"model_path {text!r} is not a local folder (ponder never downloads)")
    return folder


@dataclass(slots=True)
class BaseModel:
    """The frozen generator a head reads: its trunk, tokenizer and identity.

    Attributes:
        model: the causal LM (its ``base_model`` is the trunk; the LM head never runs).
        tokenizer: its tokenizer, with a pad token.
        fingerprint: ``{"model": folder name, "gguf_file": ..., "weights_bytes": ...}``,
            saved with a head and checked when it loads.
    """

    model: Any
    tokenizer: Any
    fingerprint: dict[str, Any]

    @property
    def trunk(self) -> Any:
        return self.model.base_model

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size


def load_base_model(model_path: str | Path, gguf_file: str | None = None, dtype: str = "float32",
                    device: str = "cpu", trust_remote_code: bool = False) -> BaseModel:
    """Load the generator's weights and tokenizer from a local folder or a GGUF file in it.

    Args:
        model_path: the checkpoint folder (``config.json``), or the folder holding
            ``gguf_file``; ``pkg:NAME`` for an installed package's folder.
        gguf_file: a GGUF file name inside ``model_path`` (dequantized to ``dtype``).
        dtype: "float32", "bfloat16" or "float16". device: torch device.
        trust_remote_code: allow a checkpoint's own modelling code.

    Raises:
        ValueError: a missing folder, GGUF file or config.json; an unknown dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ponder.actors.backends.hf_model import resolve_dtype

    folder = resolve_model_folder(model_path)
    if gguf_file and not (folder / gguf_file).is_file():
        raise ValueError(f"gguf_file {gguf_file!r} is not in {folder}")
    if not gguf_file and not (folder / "config.json").is_file():
        raise ValueError(f"model path {str(model_path)!r} has no config.json (and no gguf_file given)")
    extra = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    if gguf_file:
        extra["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype), **extra)
    model = model.to(device).eval().requires_grad_(False)
    return BaseModel(model, tokenizer, fingerprint(folder, gguf_file))


def fingerprint(folder: Path, gguf_file: str | None) -> dict[str, Any]:
    """What identifies a base model cheaply: its folder's name, GGUF file and weight bytes.

    Sizes, not hashes: hashing a 15 GB checkpoint on every verifier start costs more
    than it protects against (a head saved for another model of the same byte size).
    """
    files = [folder / gguf_file] if gguf_file else [
        p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.suffix != ".gguf"]
    return {"model": folder.name, "gguf_file": gguf_file,
            "weights_bytes": sum(p.stat().st_size for p in files)}
