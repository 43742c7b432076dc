#!/usr/bin/env bash
# Install the Debian packages listed for each PURPOSE in scripts/packages/PURPOSE.txt
# (idempotent: a no-op when all are there). The lists are the one place that names them:
# `make test-deps` installs "demo test", `make demo` installs "demo".
#
#   install-debian-packages.sh PURPOSE...
#
# Exit codes: 0 all installed, 1 some are missing and could not be installed (not root, or
# apt-get failed; the packages are named), 2 usage.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
(($#)) || { echo "usage: $0 PURPOSE... (lists in $HERE/packages)" >&2; exit 2; }

packages=()
for purpose in "$@"; do
  list=$HERE/packages/$purpose.txt
  [[ -f $list ]] || { echo "error: no package list $list" >&2; exit 2; }
  while read -r package _; do
    [[ -z $package || $package == \#* ]] || packages+=("$package")
  done <"$list"
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "  fix: sudo $0 $*" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps package scripts from starting services (docker-registry) on this host.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
rc=0
{ apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
((created_policy)) && rm -f "$policy"
if ((rc)); then
  echo "error: apt-get could not install: ${missing[*]} (exit $rc, see above)" >&2
  echo "  fix: make the Debian archive reachable (or mount the OS media as an apt source)," \
    "then run: $0 $*" >&2
  exit 1
fi
