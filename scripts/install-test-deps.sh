#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (idempotent; a no-op when present).
set -euo pipefail
PACKAGES=(openssl skopeo umoci docker-registry nftables iptables iproute2 coreutils openssh-client g++ g++-aarch64-linux-gnu qemu-user debootstrap python3-dev git curl postgresql)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing packages: ${missing[*]}; run: sudo $0" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d keeps package scripts from starting services (docker-registry) on this host.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
[ "$created_policy" -eq 1 ] && rm -f "$policy"
exit 0
