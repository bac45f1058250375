"""CLI: ``python -m sweeps.run --study NAME --collection C [...]`` (docs/sweeps.md).

Rerunning the same command resumes the study. Exit status: 0 done, 2 bad arguments or an
unreachable store (nothing trained), 3 a worker died (rerun to resume).
"""
from __future__ import annotations

import argparse
import os
import sys

from benchmark.errors import PRVRBenchError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return seeds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.run",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--study", help="registered study name (see --list)")
    p.add_argument("--collection", choices=("tvr", "activitynet", "charades"), default=None)
    p.add_argument("--data-root", default=None,
                   help="MS-SL data root; default: the synthetic 'small' profile, generated once "
                        "under <runs>/data/")
    p.add_argument("--n-trials", type=int, default=None, help="target number of finished trials")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes on this machine (0: in this process)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default $PRVR_OPTUNA_STORAGE, then "
                        "sqlite:///<runs>/optuna.db); postgresql+psycopg2://USER:PASS@HOST/DB")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, then "
                        "sqlite:///<runs>/mlflow.db)")
    p.add_argument("--seed", type=int, default=None, help="study seed (every trial trains on it)")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S1,S2,...",
                   help="train every trial on each of these seeds; the trial's value is their mean")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs of every trial")
    p.add_argument("--runs-dir", default=None, help="run directory (default $PRVR_RUNS_DIR, then ./runs)")
    p.add_argument("--list", action="store_true", help="list the registered studies and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sweeps import runner, studies

    if args.list:
        for spec in studies.list_studies():
            print(f"{spec.name:32s} {spec.method:12s} {spec.n_trials:4d} trials  {spec.summary}")
        return 0
    if not args.study or not args.collection:
        print("error: --study and --collection are required (or --list)", file=sys.stderr)
        return 2
    try:
        spec = studies.get_study(args.study)
        runner.run_study(spec, args.collection, data_root=args.data_root, n_trials=args.n_trials,
                         workers=args.workers, storage_url=args.storage,
                         tracking_uri=args.tracking_uri, seed=args.seed, epochs=args.epochs,
                         seeds=args.seeds,
                         runs_dir=args.runs_dir, log=lambda m: print(m, flush=True))
    except runner.WorkersDiedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except PRVRBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
