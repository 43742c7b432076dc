"""Shared rendering for CLI commands: JSON for machines, rich progress for terminals."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class RichReporter:
    """Progress bars on stderr for the bundle library's Reporter protocol."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, task: str, total: int | None = None) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total)

    def advance(self, task: str, amount: int = 1) -> None:
        if task in self.tasks:
            self.progress.advance(self.tasks[task], amount)

    def done(self, task: str) -> None:
        if task in self.tasks:
            self.progress.remove_task(self.tasks.pop(task))

    def note(self, message: str) -> None:
        self.console.print(message)
