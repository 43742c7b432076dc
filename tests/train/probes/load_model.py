"""Load a run's model the way the training loop does and print what each rank holds (JSON).

Usage: python load_model.py CONFIG. The process group is a world of one, as a plain run's is.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import deepspeed

from offline.train.config import load_config
from offline.train.loop import Trainer, weight_decay_groups


def main(config: Path) -> dict[str, object]:
    trainer = Trainer(load_config(config), config.parent)
    deepspeed.init_distributed(
        dist_backend="gloo", init_method=trainer.world.file_store(), rank=0, world_size=1
    )
    model = trainer._load_model(config.parent / trainer.cfg.model)
    base = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    names = {id(p): n for n, p in model.named_parameters()}
    groups = weight_decay_groups(model, 0.1)
    return {
        "parameters": sum(getattr(p, "ds_numel", p.numel()) for _, p in base),
        "held": sum(p.numel() for _, p in base),  # elements materialized on this rank
        "partitioned": sum(hasattr(p, "ds_id") for _, p in base),
        "base_tensors": len(base),
        "dtypes": dict(Counter(str(p.dtype) for _, p in base)),
        "fp32": [n for n, p in base if str(p.dtype) == "torch.float32"],
        "chunked_loss": trainer.chunked_loss,
        "no_decay": [names[id(p)] for p in groups[1]["params"]],
        "decay": len(groups[0]["params"]),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
