"""Seconds per epoch and peak memory of registered methods, measured by the one training loop.

``measure_methods`` trains each named method on ``data_root/tvr`` with its preset recipe
(reference optimiser, video-centric loader, validation each epoch, test at the end) through
``benchmark.training.loop.fit``, each in a fresh child process so that the peak memory is that
run's own: the peak resident set since ``fit`` started (the loaded splits included), and on
CUDA the allocator peak as well. Checkpoints and records go to a temporary directory.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

RESULT = "RESULT "      # prefix of the child's result line (the training console prints too)


def _fit_once(name: str, data_root: str, device: str, epochs: int, runs_dir: str) -> dict:
    """Run in the child: prepare and fit one method, return its measurements."""
    import torch

    from benchmark.config import load_config
    from benchmark.data.loaders import steps_per_epoch
    from benchmark.data.split import SplitData
    from benchmark.experiment import prepare
    from benchmark.training.loop import fit

    cfg = load_config(name, "tvr", data_root=data_root,
                      overrides={"train.epochs": epochs, "device": device,
                                 "tracking.runs_dir": runs_dir})
    prepared = prepare(cfg)
    train = prepared.splits["train"]
    if not isinstance(train, SplitData):
        raise TypeError(f"prepare() gave a {type(train).__name__} train split, not SplitData")
    record = fit(prepared.method, prepared.splits, cfg, identity=prepared.identity)
    out = {
        "epoch_seconds": record.epoch_seconds,
        "val_eval_seconds": record.eval_seconds,
        "peak_anon_mb": record.peak_anon_mb,          # what the run allocated
        "peak_file_mb": record.peak_file_mb,          # mapped feature pages (RssFile)
        "peak_rss_mb": record.peak_rss_mb,            # VmHWM: the whole resident set
        "steps_per_epoch": float(steps_per_epoch(train, cfg.train.batch_size)),
        "train_videos": float(train.num_videos),
        "epochs": float(record.epochs_run),
        "val_SumR": record.val["SumR"],
        "test_SumR": record.test["SumR"],
        "params": float(sum(p.numel() for p in prepared.method.parameters())),
        "torch_threads": float(torch.get_num_threads()),
    }
    if record.cuda_peak_mb is not None:
        out["cuda_peak_mb"] = record.cuda_peak_mb
    return out


def measure_method(name: str, data_root: pathlib.Path, device: str,
                   epochs: int = 1) -> dict[str, float]:
    """``epochs`` epochs of ``name`` by ``fit`` in a fresh child process; its measurements."""
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as runs:
        args = [name, str(data_root), device, str(epochs), runs]
        proc = subprocess.run([sys.executable, "-m", "bench.epochs", *args],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"fit of {name} failed in the bench child:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):])


def measure_methods(names: tuple[str, ...], data_root: pathlib.Path, device: str,
                    epochs: int = 1) -> dict[str, dict[str, float]]:
    """{name: measure_method(name, ...)}, one child process per method."""
    return {name: measure_method(name, data_root, device, epochs) for name in names}


def flatten_measured(measured: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"dl_dkdpp_epoch_seconds": ...}: method names made key-safe, values rounded."""
    out = {}
    for name, values in measured.items():
        prefix = name.replace("-", "_").replace("+", "p")
        out.update({f"{prefix}_{key}": round(value, 4) for key, value in values.items()})
    return out


if __name__ == "__main__":
    _name, _root, _device, _epochs, _runs = sys.argv[1:6]
    print(RESULT + json.dumps(_fit_once(_name, _root, _device, int(_epochs), _runs)), flush=True)
