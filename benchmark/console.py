"""Training progress: rich bars on a terminal, plain timed lines otherwise.

The only module that imports rich on the training path. Everything goes to stderr so that
stdout stays free for machine-readable output.

* A run says ``starting: …`` before its first step, one line per epoch, and, when the stream
  is not a terminal (a log file, a pipe), a progress line about every ``progress_seconds``
  (``$PRVR_PROGRESS_SECONDS``, default 30): step n/N, samples/s, ETA and the current loss.
  On a terminal the rich bar shows the same figures.
* Loading data (:class:`LoadDisplay`) says each phase as it starts and ends (``data: tvr/train
  videos: checking and caching 0/17,435``) and how far it is every ``progress_seconds``.
* The current loss is handed over as a tensor at every step and read (one device sync) only
  when a line or a bar refresh is due.
* A process-wide line prefix (:func:`set_line_prefix`) names whose line it is: sweep workers
  set it to the trial and its swept values (``[t003 kind=exp τ=0.12]``), so every line a
  worker prints is attributable. :func:`set_plain` turns the live bars off in processes that
  share a terminal with others (sweep workers).
* Each plain line is written with one ``write`` call and flushed, so lines of processes
  sharing one stream do not interleave mid-line.
* Plain output has a ticker thread: when a single step or a validation outlasts the interval,
  it says so (``step 4 running for 41s``, ``validating for 12s``), so a log never goes
  quiet for much longer than the interval while the loop is inside the console.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any, Callable, Mapping, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from benchmark.errors import PRVRBenchError

#: Metrics shown on the per-epoch line, when present, in this order.
SHOWN = ("train/loss", "val/SumR", "val/R1", "time/epoch_seconds")

PROGRESS_ENV = "PRVR_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0
BAR_REFRESH_SECONDS = 1.0          # loss read for the rich bar at most this often

_prefix: Callable[[], str] | None = None
_plain = False


class ConsoleSettingError(PRVRBenchError, ValueError):
    """A console setting (``$PRVR_PROGRESS_SECONDS``) is not usable; the message names it."""


def set_line_prefix(prefix: str | Callable[[], str] | None) -> None:
    """Prefix every console line of this process (a string, or a callable read per line)."""
    global _prefix
    if prefix is None or callable(prefix):
        _prefix = prefix
    else:
        text = str(prefix)
        _prefix = lambda: text  # noqa: E731


def line_prefix() -> str:
    """The current prefix followed by a space, or ''."""
    if _prefix is None:
        return ""
    text = _prefix()
    return f"{text} " if text else ""


def set_plain(plain: bool = True) -> None:
    """No live bars in this process (several processes share the terminal): plain lines."""
    global _plain
    _plain = plain


def resolve_progress_seconds(value: float | None = None) -> float:
    """The interval of plain progress lines: ``value``, else ``$PRVR_PROGRESS_SECONDS``, else 30."""
    if value is None:
        raw = os.environ.get(PROGRESS_ENV)
        if raw is None or raw.strip() == "":
            return DEFAULT_PROGRESS_SECONDS
        try:
            value = float(raw)
        except ValueError:
            raise ConsoleSettingError(f"{PROGRESS_ENV}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ConsoleSettingError(f"progress interval must be a positive number of seconds, "
                                  f"got {value!r} ({PROGRESS_ENV})")
    return float(value)


def write_line(message: str, stream: TextIO | None = None) -> None:
    """One prefixed line, written with a single call and flushed (default stream: stderr)."""
    out = stream if stream is not None else sys.stderr
    if out is None:                  # no stderr at all (pythonw): nowhere to say it
        return
    out.write(f"{line_prefix()}{message}\n")
    out.flush()


class Throttle:
    """``due()`` is true at most once per ``seconds`` (always when ``force``): for progress
    callbacks that fire more often than a line should be printed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self._last = -math.inf

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.seconds:
            self._last = now
            return True
        return False

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def generation_reporter(say: Callable[[str], None], seconds: float = 2.0
                        ) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` for the synthetic generator that says, at most every
    ``seconds`` (and at the first and last chunk), how far the writing is."""
    throttle = Throttle(seconds)

    def progress(stage: str, done: int, total: int) -> None:
        if throttle.due(done in (1, total)):
            say(f"data: {stage} written, {done}/{total} chunks ({100 * done / max(total, 1):.0f} %), "
                f"{throttle.elapsed():.0f} s")
    return progress


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_epoch_line(epoch: int, num_epochs: int, metrics: Mapping[str, float],
                      best_epoch: int | None = None) -> str:
    """``epoch 3/100 train/loss 1.2345 val/SumR 45.67 ... best epoch 3`` (1-based epoch)."""
    parts = [f"epoch {epoch + 1}/{num_epochs}"]
    for key in SHOWN:
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4g}")
    if best_epoch is not None and best_epoch >= 0:        # -1: nothing validated yet
        parts.append(f"best epoch {best_epoch + 1}")
    return "  ".join(parts)


def _value(loss: Any) -> float | None:
    """A loss handed to ``advance`` as a number (a tensor is read here: one device sync)."""
    if loss is None:
        return None
    if hasattr(loss, "item"):
        return float(loss.item())
    return float(loss)


class TrainingConsole:
    """Progress of one training run: ``start_epoch`` / ``advance`` / ``end_epoch``.

    ``what`` completes the starting line (``starting: dl-dkd++ on tvr (synthetic), …``);
    ``progress_seconds`` overrides ``$PRVR_PROGRESS_SECONDS``.
    """

    def __init__(self, num_epochs: int, steps_per_epoch: int, title: str = "train", *,
                 stream: TextIO | None = None, force_terminal: bool | None = None,
                 what: str | None = None, progress_seconds: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.console = Console(file=self.stream, force_terminal=force_terminal, highlight=False)
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = num_epochs * steps_per_epoch
        self.title = title
        self.what = what
        self.interval = resolve_progress_seconds(progress_seconds)
        self.rich = self.console.is_terminal and not _plain
        self._progress: Progress | None = None
        self._task = None
        self._started: float | None = None      # monotonic time of the first epoch start
        self._epoch = 0
        self._epoch_step = 0
        self._step = 0
        self._samples = 0
        self._loss: Any = None
        self._last_line = 0.0
        self._last_line_samples = 0
        self._last_line_step = 0
        self._last_refresh = -math.inf          # the bar's figures appear at the first step
        self._last_step_at = 0.0                # when the latest step ended
        self._lock = threading.RLock()          # the loop and the ticker share marks and stream
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "TrainingConsole":
        if self.rich:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                console=self.console, transient=True)
            self._progress.start()
        else:       # a line also while one step or a validation outlasts the interval
            self._ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5.0)
            self._ticker = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- output ----------------------------------------------------------------------------
    def _line(self, message: str, style: str | None = None) -> None:
        with self._lock:
            if self._progress is not None:       # above the live bar
                self.console.print(f"{line_prefix()}{message}", markup=False, soft_wrap=True,
                                   style=style)
            else:
                write_line(message, self.stream)

    def start_line(self) -> str:
        what = f" on {self.what}" if self.what else ""
        return (f"starting: {self.title}{what}, {self.num_epochs} epoch(s) × "
                f"{self.steps_per_epoch} steps = {self.total_steps} steps; progress "
                + ("bar below" if self.rich else f"line every {self.interval:g} s"))

    def start_epoch(self, epoch: int) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = self._last_line = self._last_step_at = now
            self._line(self.start_line())
        self._epoch, self._epoch_step = epoch, 0
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                f"{line_prefix()}{self.title} epoch {epoch + 1}/{self.num_epochs}",
                total=self.steps_per_epoch, rate="", loss="")

    def advance(self, steps: int = 1, *, samples: int | None = None, loss: Any = None) -> None:
        """``steps`` more steps of ``samples`` training samples; ``loss`` (a tensor or a
        number) is kept and read only when a line or a bar refresh is due."""
        if self._started is None:
            self.start_epoch(self._epoch)
        self._step += steps
        self._epoch_step += steps
        self._samples += samples if samples is not None else 0
        if loss is not None:
            self._loss = loss
        now = self._last_step_at = time.monotonic()
        if self._progress is not None:
            if self._task is not None:
                self._progress.advance(self._task, steps)
                if now - self._last_refresh >= BAR_REFRESH_SECONDS:
                    self._last_refresh = now
                    rate, _, loss_text = self._figures(now)
                    self._progress.update(self._task, rate=rate, loss=loss_text)
        elif now - self._last_line >= self.interval:
            with self._lock:
                if now - self._last_line >= self.interval:    # the ticker may have just said it
                    self._line(self.progress_line(now))

    def _tick(self) -> None:
        """Ticker thread (plain output): when no line came for an interval because a step or
        a validation is still running, say which, and for how long."""
        check = max(min(self.interval, 5.0), 0.5)
        while not self._stop.wait(check):
            with self._lock:
                now = time.monotonic()
                if self._started is None or now - self._last_line < self.interval:
                    continue
                self._line(self.waiting_line(now) if self._step == self._last_line_step
                           else self.progress_line(now))

    def waiting_line(self, now: float) -> str:
        """``step 3/16 (epoch 1/4, 3/4): step 4 running for 41s`` or ``epoch 1/4: 4 steps
        done, validating for 12s``: no step ended since the last line."""
        self._last_line = now
        running = format_duration(now - self._last_step_at)
        if self._epoch_step < self.steps_per_epoch:
            return (f"step {self._step}/{self.total_steps} (epoch {self._epoch + 1}/"
                    f"{self.num_epochs}, {self._epoch_step}/{self.steps_per_epoch}): step "
                    f"{self._step + 1} running for {running}")
        return (f"epoch {self._epoch + 1}/{self.num_epochs}: {self._epoch_step} steps done, "
                f"validating for {running}")

    def _figures(self, now: float) -> tuple[str, str, str]:
        """(rate, ETA, loss) texts since the last line, and move the line marks."""
        elapsed = now - self._last_line
        if self._samples:
            rate = f"{(self._samples - self._last_line_samples) / max(elapsed, 1e-9):.1f} samples/s"
        else:
            rate = f"{(self._step - self._last_line_step) / max(elapsed, 1e-9):.2f} steps/s"
        assert self._started is not None
        per_step = (now - self._started) / self._step if self._step else math.nan
        eta = format_duration(per_step * max(self.total_steps - self._step, 0))
        value = _value(self._loss)
        loss_text = "" if value is None else f"loss {value:.4g}"
        self._last_line, self._last_line_samples, self._last_line_step = now, self._samples, self._step
        return rate, eta, loss_text

    def progress_line(self, now: float | None = None) -> str:
        """``step 93/252 (epoch 2/4, 30/63) 41.3 samples/s ETA 3m05s loss 1.234``."""
        now = time.monotonic() if now is None else now
        rate, eta, loss_text = self._figures(now)
        parts = [f"step {self._step}/{self.total_steps} (epoch {self._epoch + 1}/"
                 f"{self.num_epochs}, {self._epoch_step}/{self.steps_per_epoch})", rate,
                 f"ETA {eta}"]
        if loss_text:
            parts.append(loss_text)
        return "  ".join(parts)

    def end_epoch(self, epoch: int, metrics: Mapping[str, float], best_epoch: int | None = None) -> None:
        self._line(format_epoch_line(epoch, self.num_epochs, metrics, best_epoch))

    def info(self, message: str) -> None:
        self._line(message)

    def warn(self, message: str) -> None:
        self._line(f"warning: {message}", style="yellow" if self.rich else None)


class LoadDisplay:
    """Progress of loading and checking data, called as ``display(what, done, total)`` (a
    ``benchmark.data.split.LoadProgress``).

    Plain lines when the stream is not a terminal: the first and the last call of every phase
    and one every ``progress_seconds`` in between (``data: tvr/train videos: checking and
    caching 5,120/17,435 (29 %), 41s``, the time since loading began). On a terminal one rich
    bar per phase shows the same. Use as a context manager.
    """

    def __init__(self, *, stream: TextIO | None = None, force_terminal: bool | None = None,
                 progress_seconds: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.console = Console(file=self.stream, force_terminal=force_terminal, highlight=False)
        self.interval = resolve_progress_seconds(progress_seconds)
        self.rich = self.console.is_terminal and not _plain
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._started = time.monotonic()
        self._phase: str | None = None
        self._last = -math.inf

    def __enter__(self) -> "LoadDisplay":
        if self.rich:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=self.console)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def line(self, what: str, done: int, total: int, now: float) -> str:
        count = f" {done:,}/{total:,} ({100 * done / total:.0f} %)" if total else ""
        return f"data: {what}{count}, {format_duration(now - self._started)}"

    def __call__(self, what: str, done: int, total: int) -> None:
        if self._progress is not None:
            if what not in self._tasks:
                self._tasks[what] = self._progress.add_task(f"{line_prefix()}data: {what}",
                                                            total=max(total, 1))
            self._progress.update(self._tasks[what], completed=done if total else 1)
            return
        now = time.monotonic()
        if what != self._phase or done >= total or now - self._last >= self.interval:
            self._phase, self._last = what, now
            write_line(self.line(what, done, total, now), self.stream)
