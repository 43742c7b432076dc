#!/usr/bin/env bash
# Create or refresh .venv-llamacpp: llama.cpp's OpenAI-compatible server (llama-cpp-python),
# the peer benchmarks/generate_bench.py races `offline serve` against on CPU. Built from its
# source distribution for this CPU (a few minutes the first time; pip caches the wheel).
# Idempotent. Kept apart from .venv so that nothing of it reaches the toolkit or its bundle.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-llamacpp}
PIN="llama-cpp-python[server]==0.3.36"

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
for tool in cmake g++; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: building llama.cpp needs $tool: apt-get install cmake g++" >&2
    exit 1
  fi
done
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAMA_CURL=OFF}" \
    "$VENV/bin/python" -m pip install --quiet "$PIN"
fi
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
