"""Measurement helpers shared by the bench topics: one intra-op thread, device sync."""
from __future__ import annotations

import contextlib

import torch

from benchmark.memory import AnonPeak, reset_peak_rss

_window: AnonPeak | None = None


@contextlib.contextmanager
def one_thread():
    """One intra-op torch thread while timing (restored afterwards): for single-threaded
    comparators and for tensors too small to share across threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that a timer read afterwards covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start a peak-memory window: the CUDA allocator peak on CUDA; on the CPU the peak
    anonymous RSS (sampled; mapped feature pages left out) and the resettable peak RSS."""
    global _window
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
    if _window is not None:
        _window.stop()
    _window = AnonPeak(interval_s=0.005).start()
    reset_peak_rss()


def peak_mb(device: str) -> float:
    """Peak since :func:`reset_peak`: CUDA allocator peak on CUDA, peak anonymous RSS on the
    CPU (MB)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    if _window is None:
        raise RuntimeError("peak_mb() before reset_peak()")
    return _window.peak_mb()
