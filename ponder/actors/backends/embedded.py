"""The embedded backends: ponder's own small generator and PRM, on CPU or on a GPU.

They need no download: by default they load the weights shipped in
``ponder/models/weights`` (made by ``ponder train``). Both keep a prefix cache
keyed by token ids, and expand siblings over one shared prefix with
``ponder.kernels.shared_prefix_attention``; token counts are exact
(``ponder.search.messages``).

Two kwargs say where and how they run (``generator.kwargs`` / ``verifier.kwargs``):
``device`` (auto | cpu | cuda | cuda:N; auto is CUDA when torch sees a GPU, which in a
Ray actor means the replica was given ``num_gpus``) and ``kernels`` (auto | torch |
triton; auto is Triton on CUDA when triton imports, the torch reference otherwise).
Neither imports Ray: this module runs on a bare GPU box too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ponder.kernels import resolve_device, resolve_kernels
from ponder.models import checkpoint
from ponder.models.generation import BatchGenerator
from ponder.models.gpt import GPT
from ponder.models.prefix_cache import DEFAULT_CACHE_TOKENS
from ponder.models.scoring import BatchScorer
from ponder.models.tokenizer import CharTokenizer
from ponder.models.verifier import ProcessRewardModel
from ponder.search.flops import ModelSpec
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult


def _weights_dir(model_path: str | Path | None) -> Path:
    return checkpoint.WEIGHTS_DIR if model_path is None else Path(model_path).expanduser()


def _placement(role: str, device: str | None, kernels: str,
               model: torch.nn.Module | None) -> torch.device:
    """Check ``device`` and ``kernels`` before any weights load; a given model stays put unless told."""
    try:
        if device is None and model is not None:
            where = next(model.parameters()).device
        else:
            where = resolve_device("auto" if device is None else device)
        resolve_kernels(kernels, where)
    except ValueError as e:
        raise ValueError(f"embedded {role} kwargs: {e}") from None
    return where


class EmbeddedGenerator:
    """GeneratorBackend over the embedded GPT.

    Args:
        model_path: a folder with ``generator.safetensors`` + ``generator.json``
            (default: the shipped weights).
        max_cache_tokens: prefix-cache size in positions; 0 turns the cache off.
        seed: seeds requests that carry no seed of their own.
        model, tokenizer: an already built model (tests, training); overrides model_path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None (the default)
            is auto, except that a given ``model`` stays on its own device.
        kernels: ``"auto"``, ``"torch"`` or ``"triton"`` (Triton needs CUDA).

    Raises:
        FileNotFoundError: ``model_path`` holds no generator checkpoint.
        ValueError: a bad ``device`` or ``kernels``, or one this machine cannot run.
    """

    def __init__(self, model_path: str | Path | None = None,
                 max_cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 seed: int = 0, model: GPT | None = None, tokenizer: CharTokenizer | None = None,
                 device: str | None = None, kernels: str = "auto"):
        where = _placement("generator", device, kernels, model)
        if model is None:
            model, tokenizer = checkpoint.load_generator(_weights_dir(model_path))
        self.sampler = BatchGenerator(model.to(where), tokenizer, max_cache_tokens=max_cache_tokens,
                                      seed=seed, kernels=kernels)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Sample each request's ``n`` continuations; one result per request, in order.

        Raises:
            ValueError: a prefix the tokenizer cannot read, or bad sampling values.
        """
        return self.sampler.generate(requests)

    def model_spec(self) -> ModelSpec:
        # BatchGenerator computes a request's prompt once for all its n samples.
        return replace(self.sampler.model.model_spec("embedded-generator"), prompt_once=True)

    def clear_cache(self) -> None:
        """Forget every cached prefix."""
        self.sampler.cache.clear()


class EmbeddedVerifier:
    """VerifierBackend over the embedded process reward model.

    Args:
        model_path: a folder with ``verifier.safetensors`` + ``verifier.json``
            (default: the shipped weights).
        max_cache_tokens: prefix-cache size in positions; 0 turns the cache off.
        model, tokenizer: an already built PRM (tests, training); overrides model_path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None (the default)
            is auto, except that a given ``model`` stays on its own device.
        kernels: ``"auto"``, ``"torch"`` or ``"triton"`` (Triton needs CUDA).

    Raises:
        FileNotFoundError: ``model_path`` holds no verifier checkpoint.
        ValueError: a bad ``device`` or ``kernels``, or one this machine cannot run.
    """

    def __init__(self, model_path: str | Path | None = None,
                 max_cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 model: ProcessRewardModel | None = None, tokenizer: CharTokenizer | None = None,
                 device: str | None = None, kernels: str = "auto"):
        where = _placement("verifier", device, kernels, model)
        if model is None:
            model, tokenizer = checkpoint.load_verifier(_weights_dir(model_path))
        self.scorer = BatchScorer(model.to(where), tokenizer, max_cache_tokens=max_cache_tokens,
                                  kernels=kernels)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score every step of every path; one result per request, in order.

        Raises:
            ValueError: a prompt or step the tokenizer cannot read.
        """
        return self.scorer.score(requests)

    def model_spec(self) -> ModelSpec:
        return self.scorer.model.model_spec("embedded-prm")

    def clear_cache(self) -> None:
        """Forget every cached prefix."""
        self.scorer.cache.clear()


def load_default_generator(**kwargs) -> EmbeddedGenerator:
    """The shipped generator, loaded with no network (kwargs as ``EmbeddedGenerator``)."""
    return EmbeddedGenerator(**kwargs)


def load_default_verifier(**kwargs) -> EmbeddedVerifier:
    """The shipped verifier, loaded with no network (kwargs as ``EmbeddedVerifier``)."""
    return EmbeddedVerifier(**kwargs)


__all__ = ["EmbeddedGenerator", "EmbeddedVerifier", "load_default_generator", "load_default_verifier"]
