"""The transformers PRM verifier: scores every step of every path with a local PRM.

The PRM conventions (which token or head is read where) live in ``prm.py``; this
module only batches paths through the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ponder.actors.backends.checkpoint import resolve_model_path
from ponder.actors.backends.hf_model import load_model, load_tokenizer, model_name, resolve_dtype, spec_from_model
from ponder.actors.backends.prm import PRMConvention, encode_path, label_token_ids, resolve_convention, step_probs
from ponder.search.flops import ModelSpec
from ponder.search.messages import ScoreRequest, ScoreResult


def _prm_auto_class(path: str, mode: str, trust_remote_code: bool, gguf_file: str | None = None) -> str:
    """The auto class a PRM loads with; a checkpoint whose remote code maps only AutoModel
    (Qwen2.5-Math-PRM's ``Qwen2ForProcessRewardModel``) loads with AutoModel."""
    if mode == "label_tokens":
        return "AutoModelForCausalLM"
    if gguf_file is not None:  # a GGUF file has no config.json, hence no remote code map
        return "AutoModelForTokenClassification"
    auto_map = json.loads((Path(path) / "config.json").read_text()).get("auto_map", {})
    if trust_remote_code and "AutoModel" in auto_map and "AutoModelForTokenClassification" not in auto_map:
        return "AutoModel"
    return "AutoModelForTokenClassification"



class HFVerifier:
    """VerifierBackend: a transformers PRM that scores every step of every path.

    Args:
        model_path: local PRM checkpoint folder, or the folder holding ``gguf_file``.
        gguf_file: a ``.gguf`` file in ``model_path`` to load instead of a checkpoint.
        convention: a :class:`PRMConvention`, a preset name ("math-shepherd",
            "qwen2.5-math-prm") or a dict of its fields; Math-Shepherd by default.
        dtype: "float32" (default), "bfloat16" or "float16".
        device: torch device, "cpu" by default.
        auto_class: transformers auto class to load with; by default
            AutoModelForCausalLM for "label_tokens", and for "reward_head"
            AutoModelForTokenClassification, or AutoModel when the checkpoint's remote
            code maps only that (Qwen2.5-Math-PRM, with trust_remote_code=True).
        max_batch_paths: paths per forward pass.
        trust_remote_code: allow a checkpoint's own modelling code.

    Raises:
        ValueError: a missing model path, an unknown convention or dtype, or label
            tokens that are not single tokens.
    """

    def __init__(self, model_path: str | Path, *, gguf_file: str | None = None,
                 convention: PRMConvention | str | dict | None = None, dtype: str = "float32", device: str = "cpu",
                 auto_class: str | None = None, max_batch_paths: int = 16, trust_remote_code: bool = False):
        import transformers  # optional dependency: only the hf backends need it

        path = resolve_model_path(model_path, gguf_file)
        self.convention = resolve_convention(convention)
        self.device = torch.device(device)
        resolve_dtype(dtype)  # a bad dtype fails before the (slow) load
        self.tokenizer = load_tokenizer(path, trust_remote_code, gguf_file)
        auto_class = auto_class or _prm_auto_class(path, self.convention.mode, trust_remote_code, gguf_file)
        self.model = load_model(getattr(transformers, auto_class), path, gguf_file, dtype, self.device,
                                trust_remote_code)
        self.label_ids = None
        if self.convention.mode == "label_tokens":
            self.label_ids = list(label_token_ids(self.tokenizer, self.convention.label_tokens))
        self.max_batch_paths = max_batch_paths
        self._spec = spec_from_model(model_name(path, gguf_file), self.model)

    def model_spec(self) -> ModelSpec:
        """Non-embedding parameters, layers and width of the loaded PRM."""
        return self._spec

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """P(step is good) in [0, 1] for every step of every path; one result per request, in order.

        Every path is run in full (no prefix sharing), so no prompt token is reported cached.
        """
        # (request index, path index, token ids, tag positions) for every non-empty path
        jobs = []
        for i, req in enumerate(requests):
            for j, steps in enumerate(req.paths):
                if steps:
                    jobs.append((i, j, *encode_path(self.tokenizer, self.convention, req.prompt, steps)))
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
        logits = (out.logits if hasattr(out, "logits") else out[0]).float()  # (B, T, V) or (B, T, C)
        result = []
        for b, (_, _, _, positions) in enumerate(batch):
            at_tags = logits[b, positions]  # (S, V) or (S, C)
            if self.label_ids is not None:
                at_tags = at_tags[:, self.label_ids]  # (S, 2) logits of (good, bad)
            result.append(step_probs(at_tags, self.convention))
        return result
