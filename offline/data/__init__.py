"""Data: a DVC workspace and the validate -> clean -> split stages it runs.

Import from the modules (the package imports nothing, so ``offline --help`` stays fast)::

    offline.data.workspace.init(directory, remote)         # offline init
    offline.data.sample.files.generate(out, rows=..., seed=...)  # offline data sample
    offline.data.validate.validate(root)                   # stage: metrics/validate.json
    offline.data.clean.clean(root)                         # stage: data/clean, data/rejected
    offline.data.split.split(root)                         # stage: data/split

Cleaning steps live in :mod:`offline.data.steps` (one interface, see ``steps/base.py``); the
canonical record batch they share is described in :mod:`offline.data.records`.
"""
