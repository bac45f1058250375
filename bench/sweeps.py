"""Sweep overhead per trial: what the sweep machinery adds to the training it runs.

Runs the ``bench-overhead`` study defined here (3 ``mean-pool`` trials of ``EPOCHS`` epochs on
``data_root/tvr`` and the bench device, in this process, fresh SQLite stores) through
``sweeps.runner.run_study``, then reads the trial runs back through ``benchmark.tracking``. The
spec object is passed to ``run_study`` itself, so it needs no entry in the ``sweeps.studies``
registry; worker processes, had the spec asked for them, would receive it pickled (its space,
``sweeps.spaces.lr``, is importable by name). Per trial the objective records
(sweeps/objective.py):

* ``time/setup_seconds``: space, config resolution, MLflow run creation, params and tags;
* ``time/tracking_seconds``: time inside tracker calls during training (per-epoch metrics,
  artifacts);
* ``time/trial_seconds``: the whole objective;

and the gap between one trial's MLflow run end and the next one's start is Optuna's ask/tell,
heartbeat and budget check plus the run's close. ``overhead_share`` =
Σ(setup + tracking + gap) / Σ(trial + gap); target < 0.05. The naive baseline is the same
config trained by ``run_experiment`` with no tracker and no Optuna, measured in this run:
``tracked_trial_vs_untracked_ratio``. Never asserted anywhere.
"""
from __future__ import annotations

import pathlib
import tempfile
import time

import torch

from benchmark import tracking
from benchmark.config import load_config
from benchmark.experiment import run_experiment
from benchmark.naming import Tag, TrialStateTag
from sweeps import spaces
from sweeps.runner import run_study
from sweeps.studies import StudySpec

EPOCHS = 2

STUDY = StudySpec(
    name="bench-overhead",
    method="mean-pool",
    space=spaces.lr,
    summary="benchmark only: 3 short mean-pool trials to measure the sweep overhead per trial",
    n_trials=3, workers=0, epochs=EPOCHS, pruner="none", sampler="random")


def _untracked_seconds(data_root: pathlib.Path, device: str, runs: pathlib.Path) -> float:
    cfg = load_config(STUDY.method, "tvr", data_root=data_root,
                      trial_overrides={"train.epochs": EPOCHS, "device": device,
                                       "tracking.runs_dir": str(runs)})
    started = time.perf_counter()
    run_experiment(cfg)
    return time.perf_counter() - started


def _sweep(data_root: pathlib.Path, device: str, runs: pathlib.Path, uri: str):
    """The study on ``device`` in this process, without the launcher's messages; the torch
    thread count, which the in-process worker sets, restored afterwards."""
    spec = STUDY.replace(overrides={**STUDY.overrides, "device": device})
    threads = torch.get_num_threads()
    try:
        return run_study(spec, "tvr", data_root=data_root, runs_dir=runs, tracking_uri=uri,
                         log=lambda message: None)
    finally:
        torch.set_num_threads(threads)


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as tmp:
        runs = pathlib.Path(tmp) / "runs"
        uri = f"sqlite:///{runs / 'mlflow.db'}"
        started = time.perf_counter()
        result = _sweep(data_root, device, runs, uri)
        sweep_wall = time.perf_counter() - started
        trials = tracking.search_runs(uri, [result.experiment],
                                      f"tags.{Tag.TRIAL_STATE} = '{TrialStateTag.COMPLETE}'")
        trials.sort(key=lambda r: int(r["tags"][Tag.TRIAL]))
        if not trials:
            raise RuntimeError(f"the {STUDY.name} sweep finished no trial")
        gaps = [max(0.0, (b["start_time"] - a["end_time"]) / 1000.0)
                for a, b in zip(trials, trials[1:])]
        mean_gap = sum(gaps) / len(gaps) if gaps else 0.0
        m = [r["metrics"] for r in trials]
        trial_s = sum(x["time/trial_seconds"] for x in m) / len(m)
        setup_s = sum(x["time/setup_seconds"] for x in m) / len(m)
        track_s = sum(x["time/tracking_seconds"] for x in m) / len(m)
        overhead = setup_s + track_s + mean_gap
        untracked = _untracked_seconds(data_root, device, runs)
    return {
        "trials": float(len(trials)),
        "epochs_per_trial": float(EPOCHS),
        "trial_seconds_mean": round(trial_s, 3),
        "setup_seconds_mean": round(setup_s, 3),
        "tracking_seconds_mean": round(track_s, 3),
        "between_trials_seconds_mean": round(mean_gap, 3),
        "overhead_seconds_per_trial": round(overhead, 3),
        "overhead_share": round(overhead / (trial_s + mean_gap), 4),
        "overhead_target": "< 0.05",
        "untracked_run_seconds": round(untracked, 3),
        "tracked_trial_vs_untracked_ratio": round((trial_s + mean_gap) / untracked, 3),
        "sweep_wall_seconds": round(sweep_wall, 2),
    }
