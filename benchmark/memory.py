"""Memory of this process for run records and benchmarks: anonymous RSS first, file-backed and
peak RSS beside; and ``parse_bytes`` for memory settings ("2GiB").

**Anonymous RSS** (``RssAnon`` in ``/proc/self/status``) is the memory the process itself
allocated: tensors, arrays, Python objects. It leaves out mapped file pages, which the page
cache can drop at will; the feature files are read through ``numpy.memmap``, so the plain
resident set grows with every feature page read and would charge the page cache to the method.
The kernel keeps no peak of ``RssAnon``, so ``AnonPeak`` samples it from a daemon thread
(every 20 ms by default, plus one reading at every ``peak_mb()`` call); a spike shorter than
the interval can be missed, which the interval bounds.

**File-backed RSS** (``RssFile``) is the mapped file pages resident in this process: feature
pages read through the memmap, shared libraries. ``AnonPeak`` samples its peak beside the
anonymous one (``file_peak_mb``); it is reclaimable, so it is reported, never budgeted.

**Peak RSS** (VmHWM: anonymous + file-backed + shared memory, the kernel's own high-water
mark) stays available as a third figure:

``getrusage().ru_maxrss`` is monotone and survives ``exec``, so a child process started by a
big parent (a sweep worker, a benchmark phase) would report the parent's peak. On Linux,
writing 5 to ``/proc/self/clear_refs`` resets the peak (VmHWM) to the current RSS; the peak read
afterwards belongs to what ran since. Elsewhere the monotone ``ru_maxrss`` is the fallback.
"""
from __future__ import annotations

import re
import resource
import sys
import threading

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(value: int | str) -> int:
    """A byte count from an int or a string such as ``"2GiB"``, ``"512 MiB"``, ``"1.5GB"``
    (binary units KiB/MiB/GiB/TiB, decimal kB/MB/GB/TB, plain bytes). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a byte count, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"expected a byte count such as 2GiB, 512MiB or 1000000, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    total = number * _UNITS[unit]
    if total < 0 or not total.is_integer() and unit in ("", "b"):
        raise ValueError(f"expected a non-negative whole number of bytes, got {value!r}")
    return int(total)


def _status_fields(*fields: str) -> dict[str, float]:
    """The named ``/proc/self/status`` memory fields in MB, from one read; a field the file
    lacks is absent from the result. OSError where there is no such file."""
    found: dict[str, float] = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name = line.split(":", 1)[0]
            if name in fields:
                found[name] = int(line.split()[1]) / 1024                # kB -> MB
    return found


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM, RssAnon) in MB."""
    found = _status_fields(field)
    if field not in found:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return found[field]


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
    return anon_file_mb()[0]


def anon_file_mb() -> tuple[float, float]:
    """Current (RssAnon, RssFile) in MB from one read of ``/proc/self/status``; NaN where
    ``/proc`` lacks them."""
    try:
        found = _status_fields("RssAnon", "RssFile")
    except OSError:
        found = {}
    return found.get("RssAnon", float("nan")), found.get("RssFile", float("nan"))


class AnonPeak:
    """Peak anonymous RSS (and, beside it, peak file-backed RSS) over a window, sampled by a
    daemon thread.

    Use as a context manager (or ``start``/``stop``); ``peak_mb()`` and ``file_peak_mb()`` may
    be read at any time and take one fresh reading. Where ``/proc`` lacks the fields every
    reading is NaN.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self._peak, self._file_peak = anon_file_mb()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        anon, file = anon_file_mb()
        if anon > self._peak or self._peak != self._peak:          # NaN never compares greater
            self._peak = anon
        if file > self._file_peak or self._file_peak != self._file_peak:
            self._file_peak = file

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
        """Peak RssAnon (MB) since the window started."""
        self._sample()
        return self._peak

    def file_peak_mb(self) -> float:
        """Peak RssFile (MB) since the window started: mapped pages, reclaimable."""
        self._sample()
        return self._file_peak

    def __enter__(self) -> "AnonPeak":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: allocations at least this large get their own mapping, returned to the OS when freed
MMAP_THRESHOLD = 2**20


def bound_heap() -> None:
    """Make freed tensors leave the resident set (glibc; a no-op elsewhere).

    glibc serves an allocation below its mmap threshold from a heap arena, and raises that
    threshold (up to 32 MB) whenever a mapped block is freed; freed heap memory stays resident.
    A training step allocates and frees gigabytes of tensors of a few MB each, from two threads
    (the loop and the batch prefetcher), so about 1.3 GB of freed memory stayed resident on
    full TVR. A fixed threshold of ``MMAP_THRESHOLD`` maps every larger block on its own and
    unmaps it when freed (measured: ms-sl's step peak 3.4 -> 3.1 GB anonymous, same step time).
    Process-wide and idempotent; it changes where memory comes from, never a value."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)           # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Parsing big text indexes (1.1 M frame ids for full TVR) frees about 0.6 GB that glibc
    would otherwise keep as resident anonymous memory for the rest of the run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
