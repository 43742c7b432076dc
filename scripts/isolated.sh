#!/usr/bin/env bash
# Run a command in a new network namespace with nothing but loopback, the way an air-gapped
# host looks: no route out, 127.0.0.1 up (local services and training's process group use it).
# Needs root (unshare -n).
set -euo pipefail
exec unshare -n bash -c 'ip link set lo up && exec "$@"' isolated "$@"
