"""What a user sees while a run trains: a rich progress bar (step, loss, lr, tokens/s, ETA) and one log line
every ``log_every`` steps, also appended to the run's ``log.jsonl``.

Owns presentation only; the loop hands it ``StepLog`` records.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kaiyuan.tune._loop import StepLog
from kaiyuan.tune._runs import RunDir

__all__ = ["RunReporter", "format_step"]


def format_step(log: StepLog) -> str:
    """The one log line: step, loss, lr, dt, tokens/s."""
    return (
        f"step {log.step:>5}/{log.total_steps} | loss {log.loss:.4f} | lr {log.lr:.2e} | "
        f"grad {log.grad_norm:.2f} | dt {log.dt * 1000:.0f}ms | {log.tokens_per_s:,.0f} tok/s"
    )


class RunReporter:
    """Progress bar + log lines on the console, JSON lines in the run folder."""

    def __init__(self, run: RunDir, console: Console, *, total_steps: int, start_step: int) -> None:
        self.run = run
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]tune[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.tokens = 0  # real tokens trained by this process
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, loss="-", lr="-", tps="-"
        )

    def __enter__(self) -> RunReporter:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def step(self, log: StepLog, *, print_line: bool) -> None:
        self.tokens = log.tokens
        self.progress.update(
            self.task,
            completed=log.step,
            loss=f"{log.loss:.4f}",
            lr=f"{log.lr:.2e}",
            tps=f"{log.tokens_per_s:,.0f}",
        )
        self.run.append_log({"event": "step", **dataclasses.asdict(log)})
        if print_line:
            self.progress.console.print(format_step(log), highlight=False)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)
