"""Training: the embedded default model now; the DeepSpeed loop, checkpoints and guards next.

Import from the modules (the package imports nothing, so ``offline --help`` stays fast)::

    offline.train.model_init.init_model(out, tokenizer_from=...)  # offline train init-model
    offline.train.shapes  # published architectures cut down (--arch), chat formats
"""
