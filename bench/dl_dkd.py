"""dl-dkd and dl-dkd++: seconds per training epoch, evaluation time and peak memory on small TVR.

Each method trains one epoch of ``data_root/tvr`` with its preset recipe through the one
training loop (``bench.epochs``: validation after the epoch, test at the end), each in a fresh
child process. ``pp_vs_iccv_epoch_ratio`` is what the journal version's soft targets and
separate projection cost per epoch.

The naive approach is the soft-target NCE of docs/methods.md §6.4 written as one pass per query
row and per video column (a timing yardstick, not library code; correctness is checked by the
loop oracle of tests/test_soft_nce.py), timed against the vectorised
``soft_target_nce`` on one TVR-sized batch (640 queries x 128 videos):
``soft_nce_speedup_vs_loop``. Peak memory is each training child's peak resident set (and on
CUDA ``torch.cuda.max_memory_allocated`` as well). Never asserted anywhere.
"""
from __future__ import annotations

import math
import pathlib
import time

import torch

from bench.epochs import flatten_measured, measure_methods
from bench.measure import sync
from methods.losses.soft_nce import soft_target_nce

METHODS = ("dl-dkd", "dl-dkd++")
NCE_QUERIES, NCE_VIDEOS = 640, 128   # a TVR batch: 128 videos x 5 captions


def _soft_nce_loop(U: torch.Tensor, T: torch.Tensor, qv: torch.Tensor, alpha: float, beta: float):
    """§6.4 with one pass per query row and per video column (naive reference)."""
    n, m = U.shape
    hq, hv = math.floor(alpha * n), math.floor(alpha * m)
    t2v_h, t2v_s, v2t_h, v2t_s = [], [], [], []
    for i in range(n):
        y = torch.zeros(m, dtype=U.dtype, device=U.device)
        y[qv[i]] = 1
        tgt = y if i < hq else beta * y + (1 - beta) * torch.softmax(T[i], 0)
        (t2v_h if i < hq else t2v_s).append((tgt * (U[i].logsumexp(0) - U[i])).sum())
    for v in range(m):
        y = (qv == v).to(U.dtype)
        tgt = y if v < hv else beta * y + (1 - beta) * torch.softmax(T[:, v], 0)
        term = U[:, v].logsumexp(0) - (torch.log(tgt + 1e-12) + U[:, v]).logsumexp(0)
        (v2t_h if v < hv else v2t_s).append(term)
    loss = alpha * (torch.stack(t2v_h).sum() / hq + torch.stack(v2t_h).sum() / hv)
    return loss + (1 - alpha) * (torch.stack(t2v_s).sum() / (n - hq) + torch.stack(v2t_s).sum() / (m - hv))


def _soft_nce_speedup(device: str) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    U = torch.randn(NCE_QUERIES, NCE_VIDEOS, generator=g).to(device)
    T = (torch.randn(NCE_QUERIES, NCE_VIDEOS, generator=g) * 5).to(device)
    qv = torch.arange(NCE_VIDEOS).repeat_interleave(NCE_QUERIES // NCE_VIDEOS).to(device)
    fast = soft_target_nce(U, T, qv, alpha=0.5, beta=0.8)           # warm-up and value check
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        soft_target_nce(U, T, qv, alpha=0.5, beta=0.8)
    sync(device)
    vectorised = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    slow = _soft_nce_loop(U, T, qv, 0.5, 0.8)
    sync(device)
    loop = time.perf_counter() - start
    return loop / vectorised, abs(float(fast) - float(slow))


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    out: dict[str, float | str] = {"collection": "tvr-small (synthetic)", "device": device}
    measured = measure_methods(METHODS, data_root, device)
    out.update(flatten_measured(measured))
    out["pp_vs_iccv_epoch_ratio"] = round(
        measured["dl-dkd++"]["epoch_seconds"] / measured["dl-dkd"]["epoch_seconds"], 3)
    speedup, gap = _soft_nce_speedup(device)
    out["soft_nce_speedup_vs_loop"] = round(speedup, 1)
    out["soft_nce_loop_abs_diff"] = gap
    return out
