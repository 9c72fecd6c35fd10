"""VerifierBackend: a value head on a frozen hf generator's hidden states.

Built by the factory for ``verifier.backend: hf`` with ``kwargs.value_head: DIR`` (a
head trained by ``ponder train-verifier --config``): it loads the generator's own
weights (the same ``model_path`` and ``gguf_file``) and the head, renders each path
as the head was trained on (``ponder.models.hidden_states.render_path``, with the
step delimiter saved in the head), and scores step j by the sigmoid of the head at
step j's end. Each path runs once in full, so every token counts as a prompt token
and none as cached.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ponder.actors.backends.hf_model import spec_from_model
from ponder.models.hidden_states import encode_path, load_base_model, step_states
from ponder.models.value_head import check_base, load_head
from ponder.search.flops import ModelSpec
from ponder.search.messages import ScoreRequest, ScoreResult


class HFHeadVerifier:
    """Scores steps with a value head read off the generator's hidden states.

    Args:
        model_path: the generator's folder (``pkg:NAME`` for an installed package's).
        value_head: the head's folder (``value_head.safetensors`` + ``value_head.json``).
        gguf_file: a GGUF file in ``model_path``, as the generator loads it.
        dtype: "float32" (default), "bfloat16" or "float16". device: torch device.
        max_batch_paths: paths per forward pass.
        trust_remote_code: allow a checkpoint's own modelling code.

    Raises:
        ValueError: a missing model or GGUF file, or a head trained on another model.
        FileNotFoundError: no head at ``value_head``.
    """

    def __init__(self, model_path: str | Path, *, value_head: str | Path, gguf_file: str | None = None,
                 dtype: str = "float32", device: str = "cpu", max_batch_paths: int = 16,
                 trust_remote_code: bool = False):
        self.head, self.meta = load_head(value_head)  # first: a bad path fails before the model loads
        self.base = load_base_model(model_path, gguf_file, dtype, device, trust_remote_code)
        check_base(self.meta, self.base.fingerprint, self.base.hidden_size)
        self.head = self.head.to(device)
        self.max_batch_paths = max_batch_paths
        spec = spec_from_model(self.base.fingerprint["model"], self.base.trunk)  # the LM head never runs
        head_params = sum(p.numel() for p in self.head.parameters())
        self._spec = replace(spec, name=f"{spec.name}+value_head", num_params=spec.num_params + head_params)

    def model_spec(self) -> ModelSpec:
        """The trunk's non-embedding parameters plus the head's, its layers and width."""
        return self._spec

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """P(the path ends right) at every step of every path; one result per request, in order."""
        tokenizer, delimiter = self.base.tokenizer, self.meta.delimiter
        jobs = [(i, j, *encode_path(tokenizer, req.prompt, steps, delimiter))
                for i, req in enumerate(requests) for j, steps in enumerate(req.paths) if steps]
        scores = [[[] for _ in req.paths] for req in requests]  # request -> path -> step scores
        num_tokens = [0] * len(requests)
        for start in range(0, len(jobs), self.max_batch_paths):
            batch = jobs[start:start + self.max_batch_paths]
            states = step_states(self.base.trunk, [(ids, pos) for _, _, ids, pos in batch],
                                 tokenizer.pad_token_id, self.meta.layer)  # (S, H) per path
            with torch.inference_mode():
                for (i, j, ids, _), s in zip(batch, states):
                    scores[i][j] = torch.sigmoid(self.head(s.to(self.head.mean.device))).tolist()
                    num_tokens[i] += len(ids)
        return [ScoreResult(req.request_id, scores[i], num_tokens[i], 0) for i, req in enumerate(requests)]
