"""Training-loop speed and memory: seconds per epoch of mean-pool on small synthetic TVR.

Runs ``benchmark.experiment.run_experiment`` for ``EPOCHS`` epochs (the reference optimiser,
the video-centric loader, validation each epoch, test at the end) in a fresh child process, so
that the peak resident set is this run's own (including the loaded splits). Reports mean
seconds per training epoch, mean seconds per validation pass, peak RSS, CUDA peak memory on
CUDA, the number of steps per epoch and the reached SumR (a sanity value, not a result).
Never asserted.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

EPOCHS = 3


def _child(data_root: str, device: str, runs_dir: str) -> dict:
    import torch

    from benchmark.config import load_config
    from benchmark.data.loaders import steps_per_epoch
    from benchmark.experiment import prepare
    from benchmark.training.loop import fit

    cfg = load_config("mean-pool", "tvr", data_root=data_root,
                      overrides={"train.epochs": EPOCHS, "device": device,
                                 "tracking.runs_dir": runs_dir})
    prepared = prepare(cfg)
    record = fit(prepared.method, prepared.splits, cfg)
    return {
        "mean_pool.epoch_seconds": record.epoch_seconds,
        "mean_pool.val_eval_seconds": record.eval_seconds,
        "mean_pool.peak_rss_mb": record.peak_rss_mb,
        "mean_pool.cuda_peak_mb": record.cuda_peak_mb if record.cuda_peak_mb is not None else "n/a",
        "mean_pool.steps_per_epoch": float(steps_per_epoch(prepared.splits["train"],
                                                           cfg.train.batch_size)),
        "mean_pool.train_videos": float(prepared.splits["train"].num_videos),
        "mean_pool.epochs": float(record.epochs_run),
        "mean_pool.test_SumR": record.test["SumR"],
        "mean_pool.torch_threads": float(torch.get_num_threads()),
    }


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as runs:
        proc = subprocess.run([sys.executable, "-m", "bench.training", str(data_root),
                               device, runs], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"training bench child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2], sys.argv[3])))
