"""``deepseek-doctor`` console script (the host health check arrives with its own issue)."""

from __future__ import annotations

import sys


def main() -> None:
    print(
        "deepseek-doctor: the host checks are not part of this release yet; "
        "`offline bundle build` verifies bundles on the connected side",
        file=sys.stderr,
    )
    sys.exit(2)
