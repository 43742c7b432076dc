"""``python -m offline.train --config train.yaml``: the entry DeepSpeed's launcher starts per rank.

    deepspeed --hostfile hosts --no_ssh --node_rank 0 --master_addr node0 \\
        --module offline.train --config train.yaml
"""

from __future__ import annotations

import sys

from offline.cli import main

if __name__ == "__main__":
    sys.argv = ["offline", "train", "run", *sys.argv[1:]]
    main()
