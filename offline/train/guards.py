"""Loss-spike and throughput guards; pure state machines the loop feeds once per step.

Both decide from values every rank shares (the all-reduced loss), so every rank takes the same
branch; their state goes into full checkpoints so a resumed run judges as the original would.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SpikeDetector:
    """Flags ``steps`` consecutive losses more than ``threshold`` above an EMA of the loss.

    The EMA only learns from steps that are not above the threshold, so a spike cannot raise
    its own bar; the first ``warmup`` steps only feed it.
    """

    steps: int = 3
    threshold: float = 0.15
    decay: float = 0.9
    warmup: int = 10
    ema: float | None = None
    seen: int = 0
    run: list[int] = field(default_factory=list)  # steps of the current run above the bar

    def update(self, step: int, loss: float) -> list[int] | None:
        """Feed one step; returns the spike window (its steps) when it completes."""
        judging = self.ema is not None and self.seen >= self.warmup
        if judging and loss > self.ema * (1 + self.threshold):  # type: ignore[operator]
            self.run.append(step)
            if len(self.run) >= self.steps:
                window, self.run = self.run, []
                return window
            return None
        self.run = []
        self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        self.seen += 1
        return None

    def state(self) -> dict[str, Any]:
        return {"ema": self.ema, "seen": self.seen, "run": list(self.run)}

    def restore(self, state: dict[str, Any]) -> None:
        self.ema, self.seen, self.run = state["ema"], int(state["seen"]), list(state["run"])


@dataclass
class ThroughputWatch:
    """Warns once per episode when tokens/s falls below ``drop`` x the running median."""

    drop: float = 0.5
    window: int = 20
    history: list[float] = field(default_factory=list)
    low: bool = False

    def update(self, tokens_per_s: float) -> float | None:
        """Returns the median it fell below, on the first slow step of an episode."""
        warn = None
        if len(self.history) >= min(self.window, 5):
            median = statistics.median(self.history[-self.window :])
            slow = tokens_per_s < self.drop * median
            if slow and not self.low:
                warn = median
            self.low = slow
            if slow:
                return warn  # a slow step does not drag the median down
        self.history.append(tokens_per_s)
        return warn
