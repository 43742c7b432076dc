#!/usr/bin/env bash
# Run a command on the emulated aarch64 edge device built by install-edge-emulator.sh:
#   scripts/edge-aarch64.sh python3 edge/run_edge.py --self-test
# "python3" is the device's Python (arm64 Debian, with the edge runtime wheels).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${EDGE_EMULATOR_DIR:-$ROOT/.cache/edge-aarch64}"
if [ ! -f "$DIR/.stamp" ]; then
  echo "error: no aarch64 edge emulator in $DIR; run: bash scripts/install-edge-emulator.sh" >&2
  exit 1
fi
[ "${1:-}" = python3 ] || { echo "usage: $0 python3 SCRIPT [ARGS...]" >&2; exit 2; }
shift
export PYTHONPATH="$DIR/site" PYTHONDONTWRITEBYTECODE=1
exec qemu-aarch64 -L "$DIR/sysroot" "$DIR/sysroot/usr/bin/python3.11" "$@"
