"""Training progress: rich bars on a terminal, one plain line per epoch otherwise.

The only module that imports rich on the training path. Everything goes to stderr so that
stdout stays free for machine-readable output.
"""
from __future__ import annotations

import sys
from typing import Mapping, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Metrics shown on the per-epoch line, when present, in this order.
SHOWN = ("train/loss", "val/SumR", "val/R1", "time/epoch_seconds")


def format_epoch_line(epoch: int, num_epochs: int, metrics: Mapping[str, float],
                      best_epoch: int | None = None) -> str:
    """``epoch 3/100 train/loss 1.2345 val/SumR 45.67 ... best epoch 3`` (1-based epoch)."""
    parts = [f"epoch {epoch + 1}/{num_epochs}"]
    for key in SHOWN:
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4g}")
    if best_epoch is not None:
        parts.append(f"best epoch {best_epoch + 1}")
    return "  ".join(parts)


class TrainingConsole:
    """Progress of one training run: ``start_epoch`` / ``advance`` / ``end_epoch``."""

    def __init__(self, num_epochs: int, steps_per_epoch: int, title: str = "train", *,
                 stream: TextIO | None = None, force_terminal: bool | None = None) -> None:
        self.console = Console(file=stream or sys.stderr, force_terminal=force_terminal,
                               highlight=False)
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.title = title
        self.rich = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> "TrainingConsole":
        if self.rich:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start_epoch(self, epoch: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                f"{self.title} epoch {epoch + 1}/{self.num_epochs}", total=self.steps_per_epoch)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def end_epoch(self, epoch: int, metrics: Mapping[str, float], best_epoch: int | None = None) -> None:
        self.console.print(format_epoch_line(epoch, self.num_epochs, metrics, best_epoch),
                           markup=False, soft_wrap=True)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, soft_wrap=True,
                           style="yellow" if self.rich else None)
