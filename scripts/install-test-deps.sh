#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real: the demo's and the tests' own
# lists (scripts/packages/*.txt). Idempotent; a no-op when present.
set -euo pipefail
exec bash "$(dirname "$0")/install-debian-packages.sh" demo test
