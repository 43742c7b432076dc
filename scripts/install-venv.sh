#!/usr/bin/env bash
# Create or refresh .venv with the toolkit and every extra. torch is pinned to the CPU build
# of 2.13.0 first, so that nothing later can pull a CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC="torch==2.13.0"

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_SPEC" > "$constraints"
# The CPU wheel of this exact version is what pip's configured find-links hold.
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -c "$constraints" -e ".[all,dev]"
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.version.cuda is None, "a CUDA build of torch was installed; expected the CPU build"
PY
echo "installed: $("$VENV/bin/offline" --version)"
