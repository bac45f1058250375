"""Memory of this process for run records and benchmarks: anonymous RSS first, peak RSS beside.

**Anonymous RSS** (``RssAnon`` in ``/proc/self/status``) is the memory the process itself
allocated: tensors, arrays, Python objects. It leaves out mapped file pages, which the page
cache can drop at will; the feature files are read through ``numpy.memmap``, so the plain
resident set grows with every feature page read and would charge the page cache to the method.
The kernel keeps no peak of ``RssAnon``, so ``AnonPeak`` samples it from a daemon thread
(every 20 ms by default, plus one reading at every ``peak_mb()`` call); a spike shorter than
the interval can be missed, which the interval bounds.

**Peak RSS** (VmHWM, mapped pages included) stays available as a second figure:

``getrusage().ru_maxrss`` is monotone and survives ``exec``, so a child process started by a
big parent (a sweep worker, a benchmark phase) would report the parent's peak. On Linux,
writing 5 to ``/proc/self/clear_refs`` resets the peak (VmHWM) to the current RSS; the peak read
afterwards belongs to what ran since. Elsewhere the monotone ``ru_maxrss`` is the fallback.
"""
from __future__ import annotations

import resource
import sys
import threading


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM, RssAnon) in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024                       # kB -> MB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset the peak RSS to the current RSS (no-op where the OS cannot)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident set since the last reset (MB)."""
    try:
        return status_mb("VmHWM")
    except (OSError, RuntimeError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def anon_rss_mb() -> float:
    """Current anonymous resident memory (MB); NaN where ``/proc`` has no RssAnon."""
    try:
        return status_mb("RssAnon")
    except (OSError, RuntimeError):
        return float("nan")


class AnonPeak:
    """Peak anonymous RSS over a window, sampled by a daemon thread.

    Use as a context manager (or ``start``/``stop``); ``peak_mb()`` may be read at any time and
    takes one fresh reading itself. Where RssAnon is not available every reading is NaN.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self._peak = anon_rss_mb()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = anon_rss_mb()
        if value > self._peak or self._peak != self._peak:         # NaN never compares greater
            self._peak = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> "AnonPeak":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="anon-rss-peak", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()

    def peak_mb(self) -> float:
        self._sample()
        return self._peak

    def __enter__(self) -> "AnonPeak":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
