"""The byte progress bar of the CLI's long transfers (import, pull): description, bar, bytes, speed, time left."""

from __future__ import annotations

from typing import Any

__all__ = ["byte_progress"]


def byte_progress(console: Any, *, transient: bool = False) -> Any:
    """A rich ``Progress`` for byte counts on ``console`` (imported lazily: rich is not needed for --help)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
