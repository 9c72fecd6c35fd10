"""Where a local model's weights are: a checkpoint folder, or a GGUF file inside one.

Nothing is downloaded. transformers reads a GGUF file directly (``from_pretrained``
with ``gguf_file``), unpacking its quantized blocks to dense weights as it loads;
vLLM wants a checkpoint folder, so ``dequantized_checkpoint`` writes that
unpacked model once into a cache folder keyed by the file's identity and reuses
it on every later start.

transformers and torch are imported inside the functions that load weights, so
that the config layer and the vllm backend's checks import this module cheaply.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

_CACHE_ENV = "PONDER_GGUF_CACHE"  # overrides the cache root (default ~/.cache/ponder/gguf)
_DONE = "ponder_gguf.txt"  # written last: a folder without it is a half-written copy


def resolve_model_path(model_path: str | Path, gguf_file: str | None = None) -> str:
    """The local model folder, checked before anything loads.

    Args:
        model_path: a checkpoint folder (with a ``config.json``), or the folder
            holding ``gguf_file``.
        gguf_file: a ``.gguf`` file name inside ``model_path``; None for a checkpoint.

    Raises:
        ValueError: no such checkpoint folder, or no such GGUF file in it; the message
            names ``model_path`` or ``gguf_file``.
    """
    path = Path(model_path).expanduser()
    if gguf_file is None:
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model path {str(model_path)!r} is not a local checkpoint folder with a config.json "
                "(models are never downloaded: save one with save_pretrained and pass its folder, "
                "or name a .gguf file in it with gguf_file)"
            )
        return str(path)
    if not (path / gguf_file).is_file():
        raise ValueError(f"gguf_file {gguf_file!r} is not a file in model_path {str(model_path)!r}")
    return str(path)


def pretrained_kwargs(gguf_file: str | None) -> dict:
    """The ``from_pretrained`` keyword arguments every model and tokenizer load shares."""
    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def gguf_cache_key(gguf_path: str | Path) -> str:
    """A folder name for one GGUF file's unpacked copy: its name, size and modification time.

    Hashing a multi-gigabyte file at every start would cost more than the copy
    saves; a file replaced in place gets a new size or mtime, hence a new key.
    """
    stat = Path(gguf_path).stat()
    ident = f"{Path(gguf_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return f"{Path(gguf_path).stem}-{digest}"


def default_cache_dir() -> Path:
    """``$PONDER_GGUF_CACHE``, else ``~/.cache/ponder/gguf``."""
    return Path(os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "ponder" / "gguf")


def dequantized_checkpoint(model_path: str | Path, gguf_file: str, cache_dir: str | Path | None = None,
                           trust_remote_code: bool = False) -> str:
    """A checkpoint folder holding a GGUF model's dense weights and tokenizer, written once.

    Args:
        model_path: the folder holding ``gguf_file``.
        gguf_file: the ``.gguf`` file name.
        cache_dir: where unpacked copies live (default: ``default_cache_dir()``).
        trust_remote_code: passed to transformers.

    Returns:
        The folder, ``<cache_dir>/<gguf_cache_key>``; reused as is when a finished
        copy is already there.

    Raises:
        ValueError: the GGUF file does not exist (names ``gguf_file``).
    """
    source = Path(resolve_model_path(model_path, gguf_file)) / gguf_file
    target = Path(cache_dir or default_cache_dir()).expanduser() / gguf_cache_key(source)
    if (target / _DONE).is_file():
        return str(target)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    _write_dense(str(source.parent), gguf_file, partial, trust_remote_code)
    (partial / _DONE).write_text(f"{source}\n")
    try:
        partial.rename(target)  # atomic: another process that got there first wins
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / _DONE).is_file():
            raise
    return str(target)


def _write_dense(folder: str, gguf_file: str, out: Path, trust_remote_code: bool) -> None:
    import transformers  # optional dependency: only here

    kwargs = {**pretrained_kwargs(gguf_file), "trust_remote_code": trust_remote_code}
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    gguf_config = getattr(transformers, "GgufConfig", None)  # newer transformers may keep blocks packed
    if gguf_config is not None:
        kwargs["quantization_config"] = gguf_config(dequantize=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    # The model came from a GGUF, so transformers marks it quantized and refuses to save it;
    # its weights are dense tensors by now, so save them as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
