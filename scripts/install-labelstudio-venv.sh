#!/usr/bin/env bash
# Create or refresh .venv-labelstudio: the Label Studio server in its own environment (it pins
# many packages that must not meet the toolkit's). Idempotent: a no-op when the pinned version
# is already there. The toolkit talks to it over HTTP (label-studio-sdk lives in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-labelstudio}
LABEL_STUDIO=${LABEL_STUDIO:-label-studio==1.23.2}

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
want=${LABEL_STUDIO#*==}
if [ -x "$VENV/bin/label-studio" ] && \
   have=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("label-studio"))' 2>/dev/null) && \
   [ "$have" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$LABEL_STUDIO"
echo "installed: label-studio $want in $VENV"
