"""A real 3-trial sweep for tests/test_sweep_narration.py, run in its own process so that its
console output can be read from files: ``python -c "import narration_sweep as m; m.main()"
DATA_ROOT RUNS_DIR WORKERS`` (the tests directory on PYTHONPATH, so that the spawned workers
unpickle the space by this module's name).

The space makes each trial end differently, for real:
* t000: lr = 1e38, 3 epochs validated only at the end: the weights overflow and the loss of
  epoch 3 is non-finite (NonFiniteLossError) -> FAIL with the reason;
* t001: 1 epoch: its only report is inside the pruner's warm-up -> COMPLETE;
* t002: 3 epochs validated at the end: the threshold pruner (600 > any SumR) prunes it after
  epoch 3.
"""
from __future__ import annotations

import sys

import optuna

from sweeps import runner
from sweeps.studies import StudySpec


def space(trial: optuna.Trial) -> dict:
    lr = 1e38 if trial.number == 0 else 2.5e-4
    out = {"optim.lr": trial.suggest_float("optim.lr", lr, lr)}
    out["train.epochs"] = 1 if trial.number == 1 else 3
    return out


SPEC = StudySpec(name="narration", method="mean-pool", space=space, summary="narration test",
                 n_trials=3, epochs=3, pruner="threshold", pruner_threshold=600.0,
                 pruner_warmup_epochs=1, overrides={"train.val_every": 3})


def main(argv: list[str] | None = None) -> None:
    data_root, runs_dir, workers = (argv if argv is not None else sys.argv[1:])[:3]
    runs = f"{runs_dir}"
    runner.run_study(SPEC, "tvr", data_root=data_root, runs_dir=runs, workers=int(workers),
                     storage_url=f"sqlite:///{runs}/optuna.db",
                     tracking_uri=f"sqlite:///{runs}/mlflow.db",
                     log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
