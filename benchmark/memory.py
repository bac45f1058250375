"""Peak resident memory of this process, resettable (Linux), for run records and benchmarks.

``getrusage().ru_maxrss`` is monotone and survives ``exec``, so a child process started by a
big parent (a sweep worker, a benchmark phase) would report the parent's peak. On Linux,
writing 5 to ``/proc/self/clear_refs`` resets the peak (VmHWM) to the current RSS; the peak read
afterwards belongs to what ran since. Elsewhere the monotone ``ru_maxrss`` is the fallback.
"""
from __future__ import annotations

import resource
import sys


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB."""
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
