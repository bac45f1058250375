"""Shared measurement for the method benchmarks: one training epoch, then one evaluation.

``measure_methods`` loads the small TVR train/val splits once (with the union of the methods'
requirements) and, per registered method, trains one epoch on the same batches (forward,
backward and a plain Adam step: the reference optimiser's arithmetic is the same for every
method and not what is measured), then scores validation with the shared evaluator. Peak memory
is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set on the CPU
(reset before each method; it includes the loaded splits).
"""
from __future__ import annotations

import contextlib
import pathlib
import time

import torch

from benchmark.data.loaders import train_batches
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate_method
from benchmark.interface import Progress
from benchmark.memory import peak_rss_mb, reset_peak_rss
from benchmark.registry import get_method

BATCH_SIZE = 128          # ref: bsz 128 videos (docs/methods.md §4.5, §5.5, §6.7)


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
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mb(device: str) -> float:
    """Peak since the last reset: CUDA allocator peak on CUDA, peak RSS on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def epoch_and_eval(name: str, train, val, device: str) -> dict[str, float]:
    """One epoch of ``name`` on ``train`` and one evaluation on ``val``; seconds and peak MB."""
    entry = get_method(name)
    torch.manual_seed(0)
    method = entry.cls(entry.default_config, train.dims).to(device)
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    batches = list(train_batches(train, BATCH_SIZE, torch.Generator().manual_seed(0),
                                 sort_by=method.batch_sort))
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()
    method.train()
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        progress = Progress(epoch=0, num_epochs=1, step=step, steps_per_epoch=len(batches))
        loss = method.compute_loss(batch.to(device), progress)["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    sync(device)
    epoch = time.perf_counter() - start
    train_peak = peak_mb(device)
    start = time.perf_counter()
    result = evaluate_method(method, val, device=device)
    sync(device)
    return {"epoch_seconds": epoch, "eval_seconds": time.perf_counter() - start,
            "train_peak_mb": train_peak, "steps": float(len(batches)),
            "val_SumR_after_1_epoch": float(result.metrics()["SumR"]),
            "params": float(sum(p.numel() for p in method.parameters()))}


def measure_methods(names: tuple[str, ...], data_root: pathlib.Path, device: str) -> dict[str, dict]:
    """{name: epoch_and_eval(...)} on data_root/tvr, splits loaded once for all names."""
    requires = frozenset().union(*(get_method(n).cls.requirements(get_method(n).default_config)
                                   for n in names))
    train = load_split(data_root, "tvr", "train", requires=requires)
    val = load_split(data_root, "tvr", "val")
    return {name: epoch_and_eval(name, train, val, device) for name in names}


def flatten_measured(measured: dict[str, dict]) -> dict[str, float]:
    """{"dl_dkdpp_epoch_seconds": ...}: method names made key-safe, values rounded."""
    out = {}
    for name, values in measured.items():
        prefix = name.replace("-", "_").replace("+", "p")
        out.update({f"{prefix}_{key}": round(value, 4) for key, value in values.items()})
    return out
