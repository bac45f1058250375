"""CLI: ``python -m sweeps.run --study NAME --collection C [...]`` (docs/sweeps.md).

Rerunning the same command resumes the study. Exit status: 0 done, 2 bad arguments or an
unreachable store (nothing trained), 3 a worker died (rerun to resume).
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import TYPE_CHECKING, Iterable

from benchmark.errors import PRVRBenchError

if TYPE_CHECKING:
    from sweeps.studies import StudySpec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

COLLECTIONS = ("tvr", "activitynet", "charades")


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
    p.add_argument("--collection", default=None, metavar="{" + ",".join(COLLECTIONS) + "}",
                   help="collection the study trains on")
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
    p.add_argument("--schedule-clock", choices=("epoch", "progress"), default=None,
                   help="how the trials' schedules read time (default: the study's, "
                        "docs/sweeps.md 'Budgets and the schedule clock')")
    p.add_argument("--runs-dir", default=None, help="run directory (default $PRVR_RUNS_DIR, then ./runs)")
    p.add_argument("--list", action="store_true", help="list the registered studies and exit")
    p.add_argument("--markdown", action="store_true",
                   help="with --list: the Markdown table the README holds (tests/test_sweep_narration.py)")
    return p


def studies_markdown(specs: Iterable[StudySpec]) -> str:
    """The README's study table: one row per registered study, in registration order."""
    rows = ["| study | method | trials | workers | epochs | clock | seeds | pruner | what it sweeps |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in specs:
        epochs = "preset" if s.epochs is None else f"≤ {s.epochs}"
        if s.seeds:
            seeds = ",".join(map(str, s.seeds))
        else:
            seeds = f"{s.seed} + trial" if s.seed_per_trial else str(s.seed)
        if s.grid is not None:
            seeds = "its grid's"
        rows.append(f"| `{s.name}` | `{s.method}` | {s.n_trials} | {s.workers} | {epochs} | "
                    f"{s.schedule_clock} | {seeds} | {s.pruner} | {s.summary} |")
    return "\n".join(rows) + "\n"


def unknown_study_message(name: str, known: list[str]) -> str:
    """``unknown study 'nope'; did you mean tvr-default? Known: …`` (always a suggestion)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.0) or known[:1]
    return (f"unknown study {name!r}; did you mean {', '.join(close)}? Known: {', '.join(known)} "
            "(python -m sweeps.run --list)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sweeps import studies

    if args.list and args.markdown:
        print(studies_markdown(studies.list_studies()), end="")
        return 0
    if args.list:
        for spec in studies.list_studies():
            print(f"{spec.name:32s} {spec.method:12s} {spec.n_trials:4d} trials  {spec.summary}")
        return 0
    # the study is checked first, whatever the other flags are
    if not args.study:
        print("error: --study NAME is required (or --list)", file=sys.stderr)
        return 2
    known = sorted(s.name for s in studies.list_studies())
    if args.study not in known:
        print(f"error: {unknown_study_message(args.study, known)}", file=sys.stderr)
        return 2
    if not args.collection:
        print(f"error: --collection is required ({' | '.join(COLLECTIONS)})", file=sys.stderr)
        return 2
    if args.collection not in COLLECTIONS:
        print(f"error: unknown collection {args.collection!r}; choose one of "
              f"{', '.join(COLLECTIONS)}", file=sys.stderr)
        return 2
    spec = studies.get_study(args.study)
    if args.schedule_clock is not None:
        spec = spec.replace(schedule_clock=args.schedule_clock)
    # the first line, before the heavy imports and the store checks (issue 14: within seconds)
    print(f"sweep: study '{spec.name}' on {args.collection} ({spec.method}, {spec.summary}); "
          "checking the stores", flush=True)
    from sweeps import runner

    try:
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
