#!/usr/bin/env bash
# An aarch64 edge device emulated on this host, for running exported aarch64 TVM libraries:
# an arm64 Debian Python (debootstrap's first stage plus the Python packages, unpacked, no
# chroot needed) under qemu-aarch64 user emulation, and the device's runtime wheels
# (bundle/requirements/edge-aarch64.in) installed for aarch64. Idempotent: a stamp records
# what was built. Run a command on it with scripts/edge-aarch64.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${EDGE_EMULATOR_DIR:-$ROOT/.cache/edge-aarch64}"
PIP_PYTHON="${PIP_PYTHON:-$ROOT/.venv/bin/python}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm  # Python 3.11, as the toolkit and the edge bundle
REQUIREMENTS="$ROOT/bundle/requirements/edge-aarch64.in"

for tool in qemu-aarch64 debootstrap dpkg-deb; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool not found; run: make test-deps (packages qemu-user, debootstrap)" >&2
    exit 1
  }
done
want="$SUITE $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ -f "$DIR/.stamp" ] && [ "$(cat "$DIR/.stamp")" = "$want" ]; then
  exit 0
fi
rm -rf "$DIR.tmp"
mkdir -p "$DIR.tmp"
echo "building the aarch64 edge emulator in $DIR (Debian $SUITE arm64 + TVM runtime wheels)"
debootstrap --arch=arm64 --variant=minbase --foreign \
  --include=python3.11-minimal,libpython3.11-stdlib,libstdc++6 \
  "$SUITE" "$DIR.tmp/sysroot" "$MIRROR" >"$DIR.tmp/debootstrap.log" 2>&1 || {
  tail -20 "$DIR.tmp/debootstrap.log" >&2
  exit 1
}
# the first stage leaves --include packages unpacked only as .deb files
for deb in "$DIR.tmp"/sysroot/var/cache/apt/archives/*.deb; do
  dpkg-deb -x "$deb" "$DIR.tmp/sysroot"
done
rm -f "$DIR.tmp"/sysroot/var/cache/apt/archives/*.deb
"$PIP_PYTHON" -m pip install --quiet --no-warn-conflicts --target "$DIR.tmp/site" \
  --python-version 3.11 --implementation cp --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
  --platform manylinux2014_aarch64 -r "$REQUIREMENTS"
PYTHONPATH="$DIR.tmp/site" qemu-aarch64 -L "$DIR.tmp/sysroot" "$DIR.tmp/sysroot/usr/bin/python3.11" -c \
  'import platform, numpy, tvm; assert platform.machine() == "aarch64"' || {
  echo "error: the emulated aarch64 Python cannot import numpy and tvm" >&2
  exit 1
}
echo "$want" >"$DIR.tmp/.stamp"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
echo "aarch64 edge emulator ready: scripts/edge-aarch64.sh python3 ..."
