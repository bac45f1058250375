"""Full-size TVR on this machine: load time, memory, training speed and full test evaluation.

``python -m bench --scale full`` (``nox -s bench -- --scale full``; not part of CI) generates
the synthetic full TVR once (cached under ``<runs>/data``, 21 GB) and measures each method of
``METHODS`` in a fresh child process, at the default ``data.memory_budget`` and with
``data.bound_heap`` on (docs/architecture.md §5.4):

* ``load_cold_seconds``: ``prepare`` (every split loaded, every check run) with an empty check
  manifest; ``load_cached_seconds``: the same again with the manifest the first load wrote
  (the value checks skipped). Page-cache state is whatever the machine has: "cold" means the
  checks ran, not that the disk was cold.
* ``step_seconds``: mean seconds of training steps ``2..STEPS`` (the first is reported
  apart), batches prefetched as ``fit`` does; ``epoch_seconds_extrapolated`` = step_seconds x
  steps per epoch (extrapolated, not measured).
* ``test_eval_seconds``: ``evaluate_method`` on the whole test split (10,895 queries x 2,179
  videos) with the weights after those steps.
* ``peak_anon_mb`` (RssAnon: what the process allocated) and ``peak_file_mb`` (RssFile:
  mapped feature pages, reclaimable) for each phase and for the whole child; on CUDA also
  ``train_steps_cuda_peak_mb`` and ``test_eval_cuda_peak_mb`` (``torch.cuda.max_memory_allocated``
  in the phase; steps are timed after ``torch.cuda.synchronize``).
"""
from __future__ import annotations

import gc
import json
import pathlib
import subprocess
import sys
import tempfile
import time

RESULT = "RESULT "
METHODS = ("ms-sl", "dl-dkd++", "kdc-net")
STEPS = 8


def _measure(name: str, data_root: str, device: str, steps: int, runs_dir: str) -> dict:
    """Run in the child: load twice, train ``steps`` steps, evaluate test; the measurements."""
    import torch

    from benchmark.config import load_config
    from benchmark.data import bigfile
    from benchmark.data.loaders import steps_per_epoch, train_batches
    from benchmark.evaluate import evaluate_method
    from benchmark.experiment import prepare
    from benchmark.interface import Progress
    from benchmark.memory import AnonPeak, trim_heap
    from benchmark.seeding import seed_everything
    from benchmark.training.optim import build_optimizer

    cfg = load_config(name, "tvr", data_root=data_root,
                      overrides={"device": device, "tracking.runs_dir": runs_dir,
                                 "data.bound_heap": True})
    out: dict[str, float] = {}
    whole = AnonPeak(interval_s=0.005).start()

    def phase(label: str, window: AnonPeak, seconds: float) -> None:
        window.stop()
        out[f"{label}_seconds"] = round(seconds, 2)
        out[f"{label}_peak_anon_mb"] = round(window.peak_mb(), 1)
        out[f"{label}_peak_file_mb"] = round(window.file_peak_mb(), 1)
        print(f"bench: {name} {label}: {seconds:.1f} s, peak anon {window.peak_mb():.0f} MB, "
              f"peak file-backed {window.file_peak_mb():.0f} MB", file=sys.stderr, flush=True)

    for label in ("load_cold", "load_cached"):
        window, started = AnonPeak(interval_s=0.005).start(), time.perf_counter()
        prepared = prepare(cfg)
        phase(label, window, time.perf_counter() - started)
        if label == "load_cold":         # as a second process would: nothing parsed is kept
            del prepared
            bigfile._OPEN.clear()
            gc.collect()
            trim_heap()

    method, train, test = prepared.method, prepared.splits["train"], prepared.splits["test"]
    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def cuda_window(label: str | None = None) -> None:
        """Close the CUDA peak window of ``label`` (recorded) and open the next one."""
        if not cuda:
            return
        torch.cuda.synchronize()
        if label is not None:
            out[f"{label}_cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()

    method.to(dev).train()
    cuda_window()
    per_epoch = steps_per_epoch(train, cfg.train.batch_size)
    optimizer = build_optimizer(method, cfg.optim, t_total=per_epoch * cfg.train.epochs)
    generator = seed_everything(cfg.seed)
    window, times = AnonPeak(interval_s=0.005).start(), []
    started = time.perf_counter()
    batches = train_batches(train, cfg.train.batch_size, generator, sort_by=method.batch_sort)
    for step, batch in enumerate(batches):
        if step == steps:
            break
        batch = batch.to(dev)
        progress = Progress(epoch=0, num_epochs=cfg.train.epochs, step=step,
                            steps_per_epoch=per_epoch, clock=cfg.train.schedule_clock,
                            reference_epochs=cfg.train.reference_epochs)
        loss = method.compute_loss(batch, progress)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        print(f"bench: {name} step {step + 1}/{steps}: {times[-1]:.2f} s", file=sys.stderr,
              flush=True)
    batches.close()
    phase("train_steps", window, sum(times))
    cuda_window("train_steps")
    out["first_step_seconds"] = round(times[0], 2)
    out["step_seconds"] = round(sum(times[1:]) / max(len(times) - 1, 1), 3)
    out["steps_measured"] = float(len(times))
    out["steps_per_epoch"] = float(per_epoch)
    out["epoch_seconds_extrapolated"] = round(out["step_seconds"] * per_epoch, 1)

    window, started = AnonPeak(interval_s=0.005).start(), time.perf_counter()
    result = evaluate_method(method, test, query_chunk=cfg.eval.query_chunk,
                             video_chunk=cfg.eval.video_chunk, device=dev)
    cuda_window("test_eval")
    phase("test_eval", window, time.perf_counter() - started)
    out["test_queries"], out["test_videos"] = float(test.num_queries), float(test.num_videos)
    out["test_SumR"] = round(result.metrics()["SumR"], 3)
    whole.stop()
    out["peak_anon_mb"] = round(whole.peak_mb(), 1)
    out["peak_file_mb"] = round(whole.file_peak_mb(), 1)
    out["memory_budget_bytes"] = float(cfg.data.memory_budget_bytes)
    return out


def measure(name: str, data_root: pathlib.Path, device: str, steps: int = STEPS) -> dict:
    """``_measure`` of one method in a fresh child process (its own peak memory); the child's
    progress lines pass through to stderr."""
    with tempfile.TemporaryDirectory(prefix="bench-full-") as runs:
        proc = subprocess.run([sys.executable, "-m", "bench.full", name, str(data_root), device,
                               str(steps), runs], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"full-size bench of {name} failed (exit {proc.returncode})")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):])


def run(data_root: pathlib.Path, device: str, methods: tuple[str, ...] = METHODS) -> dict:
    """{"<method>_<figure>": value} for every method, one child each, one after another."""
    out: dict[str, float] = {}
    for name in methods:
        prefix = name.replace("-", "_").replace("+", "p")
        out.update({f"{prefix}_{k}": v for k, v in measure(name, data_root, device).items()})
    return out


if __name__ == "__main__":
    _name, _root, _device, _steps, _runs = sys.argv[1:6]
    print(RESULT + json.dumps(_measure(_name, _root, _device, int(_steps), _runs)), flush=True)
