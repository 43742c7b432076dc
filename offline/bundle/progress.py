"""How the bundle library reports progress without knowing about terminals."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """Receives progress; the CLI renders it with rich, tests pass ``NullReporter``."""

    def start(self, task: str, total: int | None = None) -> None: ...

    def advance(self, task: str, amount: int = 1) -> None: ...

    def done(self, task: str) -> None: ...

    def note(self, message: str) -> None: ...


class NullReporter:
    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, amount: int = 1) -> None:
        pass

    def done(self, task: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass
