"""Cleaning steps, by the name params.yaml uses for them.

Each entry maps a step name to ``(module, params class, factory)``; the factory is called as
``factory(params, ctx)`` and returns a :class:`~offline.data.steps.base.Step`.
"""

from __future__ import annotations

REGISTRY: dict[str, tuple[str, str, str]] = {
    "normalize": ("offline.data.steps.text", "NormalizeParams", "normalize"),
    "regex": ("offline.data.steps.text", "RegexParams", "regex"),
    "markup": ("offline.data.steps.text", "MarkupParams", "markup"),
    "length": ("offline.data.steps.quality", "LengthParams", "length"),
    "quality": ("offline.data.steps.quality", "QualityParams", "quality"),
    "conversation": ("offline.data.steps.conversation", "ConversationParams", "conversation"),
    "pii": ("offline.data.steps.pii", "PiiParams", "pii"),
    "exact_dedup": ("offline.data.steps.dedup", "ExactDedupParams", "exact_dedup"),
    "near_dedup": ("offline.data.steps.dedup", "NearDedupParams", "near_dedup"),
}
