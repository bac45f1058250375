"""kdc-net reconstruction: seconds per training epoch, evaluation time and peak memory on small TVR.

The reference point is ``dl-dkd++``, the method kdc-net extends, measured in the same run on
the same data: ``epoch_ratio_vs_dl_dkd_pp`` is what HSA + DTA + KRD cost per epoch. One epoch
each with its preset recipe through the one training loop (``bench.epochs``: validation after
the epoch, test at the end), each in a fresh child process.

The naive approach is the KRD target (docs/methods.md §9.3.5) written as a per-query loop over
frames (a restatement of the formulas, not library code), timed against the vectorised
KRD target (reached through the registered method's ``_kd_target``) on one TVR-sized batch
(640 queries x 128 frames): ``krd_speedup_vs_loop``. Peak memory is each training child's peak
resident set (and on CUDA ``torch.cuda.max_memory_allocated`` as well). Never asserted anywhere.
"""
from __future__ import annotations

import pathlib
import time

import torch

from bench.epochs import flatten_measured, measure_methods
from bench.measure import one_thread, sync
from benchmark.interface import FeatureDims, Progress
from benchmark.registry import get_method
from methods.kdc_net import KDCNet, KDCNetConfig
from methods.losses.krd import window_sizes

METHODS = ("dl-dkd++", "kdc-net")
KRD_QUERIES, KRD_FRAMES = 640, 128   # a TVR batch: 128 videos x 5 captions, up to 128 frames
REPEATS = 3
_TINY_DIMS = FeatureDims(query=8, video=8, teacher=8)   # the KRD timing needs no real layers


def _krd_loop(r: torch.Tensor, mask: torch.Tensor, windows: list[int], delta: float, lam: float,
              tau: float) -> torch.Tensor:
    """§9.3.5 with one pass per query and per frame (naive reference; mean smoothing, softmax;
    ``windows`` holds each query's odd window)."""
    out = torch.zeros_like(r)
    for i in range(r.shape[0]):
        half = (windows[i] - 1) // 2
        n = int(mask[i].sum())
        row = r[i, :n].tolist()
        smooth = [sum(row[max(t - half, 0):t + half + 1]) / len(row[max(t - half, 0):t + half + 1])
                  for t in range(n)]
        top, bottom = max(smooth), min(smooth)
        kept = [t for t in range(n) if smooth[t] - bottom >= (1 - delta) * (top - bottom)]
        ref = torch.zeros(n, dtype=r.dtype)
        ref[kept] = torch.tensor([smooth[t] / tau for t in kept], dtype=r.dtype).softmax(0)
        raw = (r[i, :n] / tau).softmax(0)
        out[i, :n] = lam * ref.to(r.device) + (1 - lam) * raw
    return out


def _krd_speed(device: str) -> dict[str, float]:
    """Timed with one intra-op thread: a 640 x 128 target is too small to share, and in a full
    bench run with 2 threads on a busy machine it measured 0.18x the loop instead of 10-56x."""
    with one_thread():
        return _krd_speed_one_thread(device)


def _krd_speed_one_thread(device: str) -> dict[str, float]:
    entry = get_method("kdc-net")
    config = entry.default_config
    if not isinstance(config, KDCNetConfig):
        raise TypeError(f"kdc-net is registered with a {type(config).__name__}, not a KDCNetConfig")
    k = config.krd
    method = entry.cls(config, _TINY_DIMS)
    if not isinstance(method, KDCNet):
        raise TypeError(f"kdc-net is registered as {entry.cls.__name__}, not KDCNet")
    g = torch.Generator().manual_seed(0)
    nq, frames = KRD_QUERIES, KRD_FRAMES
    lengths = torch.randint(8, frames + 1, (nq,), generator=g)
    mask = (torch.arange(frames)[None] < lengths[:, None]).float().to(device)
    r = (torch.rand(nq, frames, generator=g) * 0.4).to(device) * mask
    # the end of a 120-epoch run: the λ ramp is over whichever schedule clock the run uses
    end = Progress(epoch=120, num_epochs=120, step=120, steps_per_epoch=1)
    windows = window_sizes(mask, k.window, k.window_fraction).tolist()
    method._kd_target(r, r, mask, end)                             # warm-up
    vectorised = loop = float("inf")
    max_abs_diff = float("nan")
    for _ in range(REPEATS):                                       # best of: a shared machine is noisy
        sync(device)
        start = time.perf_counter()
        fast = method._kd_target(r, r, mask, end)
        sync(device)
        vectorised = min(vectorised, time.perf_counter() - start)
        if fast is None:
            raise RuntimeError("kdc-net's registered config has KRD off: there is no target to time")
        start = time.perf_counter()
        slow = _krd_loop(r, mask, windows, k.delta, k.lam_at(end), config.kd_temperature)
        loop = min(loop, time.perf_counter() - start)
        max_abs_diff = float((fast - slow).abs().max())                # of the last repeat
    return {"krd_vectorised_seconds": vectorised, "krd_loop_seconds": loop,
            "krd_speedup_vs_loop": loop / max(vectorised, 1e-9), "krd_max_abs_diff": max_abs_diff}


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    out: dict[str, float | str] = {"collection": "tvr-small (synthetic)"}
    measured = measure_methods(METHODS, data_root, device)
    out.update(flatten_measured(measured))
    out["epoch_ratio_vs_dl_dkd_pp"] = round(
        measured["kdc-net"]["epoch_seconds"] / measured["dl-dkd++"]["epoch_seconds"], 3)
    out["eval_ratio_vs_dl_dkd_pp"] = round(
        measured["kdc-net"]["val_eval_seconds"] / measured["dl-dkd++"]["val_eval_seconds"], 3)
    out.update({key: round(value, 6) for key, value in _krd_speed(device).items()})
    return out
