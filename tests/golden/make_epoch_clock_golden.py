"""Regenerate ``epoch_clock_tiny_tvr.json``: per-epoch training metrics and the final val/test
metrics of short runs on the tiny synthetic TVR collection (seed 0), one intra-op thread.

The file pins today's numbers under the default ``train.schedule_clock = "epoch"``
(tests/test_schedule_clock.py). Regenerate it only from a commit whose numbers are known to be
right (it was made at ad001ae, before the clock existed), with the tree to measure first on
PYTHONPATH:  PYTHONPATH=TREE python tests/golden/make_epoch_clock_golden.py OUT.json
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

#: method -> the overrides of its run (2 epochs, small batches; MS-SL's hard negatives from
#: epoch 1 so that both phases are covered)
RUNS: dict[str, dict] = {
    "mean-pool": {},
    "ms-sl": {"method.hard_negative_start_epoch": 1},
    "dl-dkd": {},
    "dl-dkd++": {},
}
COMMON = {"train.epochs": 2, "train.batch_size": 16, "seed": 0, "device": "cpu"}


def measure(root: Path, runs_dir: Path, method: str) -> dict:
    from benchmark.config import load_config
    from benchmark.experiment import run_experiment

    cfg = load_config(method, "tvr", data_root=root,
                      overrides={**COMMON, **RUNS[method], "tracking.runs_dir": str(runs_dir)})
    epochs: list[dict[str, float]] = []
    record = run_experiment(cfg, hooks=[lambda s: epochs.append(
        {k: v for k, v in s.metrics.items() if k.startswith(("train/", "val/"))})])
    return {"epochs": epochs, "val": record.val, "test": record.test}


def main(out: str) -> None:
    from benchmark.data.synthetic import generate

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate("tvr", "tiny", 0, root)
        golden = {m: measure(root, Path(tmp) / "runs", m) for m in RUNS}
    Path(out).write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
