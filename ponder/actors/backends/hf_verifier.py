"""transformers PRM verifier: scores every step of every path with a local PRM checkpoint.

The path layout and the positions read come from the PRM's preset
(``ponder.actors.backends.prm`` and ``prm_input``); this module loads the model
the preset needs and runs it. Nothing is downloaded: models load with
``local_files_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ponder.actors.backends.checkpoint import pretrained_kwargs, resolve_model_path
from ponder.actors.backends.hf_model import load_tokenizer, model_name, resolve_dtype, spec_from_model
from ponder.actors.backends.prm import PRMConvention, pick_convention, step_probs
from ponder.actors.backends.prm_input import encode_path, encode_requests, label_token_ids
from ponder.search.flops import ModelSpec
from ponder.search.messages import ScoreRequest, ScoreResult


def _prm_auto_class(path: str, mode: str, trust_remote_code: bool, gguf_file: str | None = None) -> str:
    """The auto class a PRM loads with; a checkpoint whose remote code maps only AutoModel
    (Qwen2.5-Math-PRM's ``Qwen2ForProcessRewardModel``) loads with AutoModel.

    Raises:
        ValueError: a Qwen2ForProcessRewardModel without trust_remote_code: transformers'
            own Qwen2ForTokenClassification would load with a fresh one-layer head in
            place of its two-layer one, and score at random.
    """
    if mode == "label_tokens":
        return "AutoModelForCausalLM"
    if gguf_file is not None:  # a GGUF file has no config.json, hence no remote code map
        return "AutoModelForTokenClassification"
    config = json.loads((Path(path) / "config.json").read_text())
    if "Qwen2ForProcessRewardModel" in (config.get("architectures") or []) and not trust_remote_code:
        raise ValueError("Qwen2ForProcessRewardModel ships its own modelling code: set "
                         "verifier.kwargs.trust_remote_code: true to load this PRM")
    auto_map = config.get("auto_map", {})
    if trust_remote_code and "AutoModel" in auto_map and "AutoModelForTokenClassification" not in auto_map:
        return "AutoModel"
    return "AutoModelForTokenClassification"


class HFVerifier:
    """VerifierBackend: a transformers PRM that scores every step of every path.

    Args:
        model_path: local PRM checkpoint folder (or the folder holding ``gguf_file``).
        gguf_file: a GGUF file in ``model_path`` to load instead of a checkpoint.
        prm: a preset name ("qwen2.5-math-prm", "math-shepherd", "rlhflow",
            "skywork-prm"), a dict of :class:`PRMConvention` fields or an instance;
            None: detected from the checkpoint (``detect_preset``).
        convention: the older name of ``prm``; give one of the two.
        dtype: "float32" (default), "bfloat16" or "float16".
        device: torch device, "cpu" by default.
        auto_class: transformers auto class to load with; by default
            AutoModelForCausalLM for "label_tokens", and for "reward_head"
            AutoModelForTokenClassification, or AutoModel when the checkpoint's remote
            code maps only that (Qwen2.5-Math-PRM, with trust_remote_code=True).
            A "value_head" PRM (Skywork) loads its backbone and ``v_head`` itself.
        max_batch_paths: paths per forward pass.
        max_length: longest PRM input in tokens; default: the model's
            ``max_position_embeddings`` (or the tokenizer's limit when smaller).
            A longer path fails its request with a ValueError naming it; nothing is cut.
        trust_remote_code: allow a checkpoint's own modelling code.

    Raises:
        ValueError: a missing model path, an unknown preset or dtype, a checkpoint
            whose preset cannot be detected, or label tokens that are not single tokens.
    """

    def __init__(self, model_path: str | Path, *, prm: PRMConvention | str | dict | None = None,
                 convention: PRMConvention | str | dict | None = None, dtype: str = "float32", device: str = "cpu",
                 auto_class: str | None = None, max_batch_paths: int = 16, max_length: int | None = None,
                 trust_remote_code: bool = False, gguf_file: str | None = None):
        import transformers

        path = resolve_model_path(model_path, gguf_file)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(path, trust_remote_code, gguf_file)
        self.convention = pick_convention(path, prm, convention, self.tokenizer)
        mode = self.convention.mode
        if mode == "value_head":
            from ponder.actors.backends.value_head import load_value_head_prm  # imports transformers: lazy

            self.model = load_value_head_prm(path, resolve_dtype(dtype), trust_remote_code)
        else:
            loader = getattr(transformers, auto_class or _prm_auto_class(path, mode, trust_remote_code, gguf_file))
            self.model = loader.from_pretrained(
                path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
                **pretrained_kwargs(gguf_file))  # local_files_only among them
        self.model = self.model.to(self.device).eval()
        self.label_ids = None
        if mode == "label_tokens":
            self.label_ids = list(label_token_ids(self.tokenizer, self.convention.label_tokens))
        self.max_batch_paths = max_batch_paths
        self.max_length = max_length or _context_length(self.model.config, self.tokenizer)
        self._spec = replace(spec_from_model(model_name(path, gguf_file), self.model),
                             prompt_overhead_tokens=self._format_overhead())

    def _format_overhead(self) -> int:
        """Tokens the preset's layout adds to a one-step path beyond its text (system prompt,
        chat turns, step tags): what a reservation's byte-count bound of the text misses."""
        try:
            ids, _ = encode_path(self.tokenizer, self.convention, "x", ["y"])
        except ValueError:  # a layout this tokenizer cannot render: scoring says so, per request
            return 0
        plain = len(self.tokenizer("x\ny", add_special_tokens=False)["input_ids"])
        return max(0, len(ids) - plain)

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width of the loaded PRM."""
        return self._spec

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """P(step is good) in [0, 1] for every step of every path; one result per request, in order.

        Every path is run in full (no prefix sharing), so no prompt token is reported cached.

        Raises:
            ValueError: a path longer than ``max_length`` (naming its request), before any model call.
        """
        # (request index, path index, token ids, scored positions) for every non-empty path
        jobs = encode_requests(self.tokenizer, self.convention, requests, self.max_length)
        scores = [[[] for _ in req.paths] for req in requests]  # request -> path -> step scores
        num_tokens = [0] * len(requests)
        for start in range(0, len(jobs), self.max_batch_paths):
            batch = jobs[start:start + self.max_batch_paths]
            for (i, j, ids, _), probs in zip(batch, self._score_batch(batch)):
                scores[i][j] = probs
                num_tokens[i] += len(ids)
        return [ScoreResult(req.request_id, scores[i], num_tokens[i], 0) for i, req in enumerate(requests)]

    @torch.inference_mode()
    def _score_batch(self, batch) -> list[list[float]]:
        width = max(len(ids) for _, _, ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros_like(input_ids)  # (B, T) right padding: real positions keep their index
        for b, (_, _, ids, _) in enumerate(batch):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            mask[b, :len(ids)] = 1
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        if isinstance(out, torch.Tensor):  # a value head: (B, T)
            outputs = out.float()
        else:  # (B, T, V) LM logits or (B, T, C) class logits
            outputs = (out.logits if hasattr(out, "logits") else out[0]).float()
        result = []
        for b, (_, _, _, positions) in enumerate(batch):
            at_steps = outputs[b, positions]  # (S, V), (S, C) or (S,)
            if self.label_ids is not None:
                at_steps = at_steps[:, self.label_ids]  # (S, 2) logits of (good, bad)
            result.append(step_probs(at_steps, self.convention))
        return result


def _context_length(config, tokenizer) -> int | None:
    """The model's position limit, or the tokenizer's when that is smaller (and not a placeholder)."""
    limits = [getattr(config.get_text_config(), "max_position_embeddings", None)]
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 10**7:  # transformers writes ~1e30 when unknown
        limits.append(limit)
    limits = [n for n in limits if n]
    return min(limits) if limits else None
