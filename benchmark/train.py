"""``python -m benchmark.train``: train one method on one collection and report it.

    python -m benchmark.train --method mean-pool --collection tvr --data-root ROOT \
        [--visual-feature F] [--epochs N] [--seed S] [--device auto|cpu|cuda] \
        [--set key=value ...] [--config FILE ...] [--json-out PATH] \
        [--tracking-uri URI] [--runs-dir DIR] [--resume RUN_DIR|auto]
    python -m benchmark.train --list-methods

Config errors (unknown method, unknown ``--set`` key, wrong type) and bad input files stop
before training with one line on stderr and exit code 2. With ``--tracking-uri`` (or
``tracking.tracking_uri`` in the config) the run is tracked in MLflow under the names of
docs/architecture.md §7.

``--resume RUN_DIR`` continues a killed run from ``RUN_DIR/last.ckpt`` (written after every
epoch; ``benchmark.training.resume``) and ends with the numbers the run would have had
uninterrupted; ``--resume auto`` picks the newest unfinished run under ``<runs>/checkpoints/``
with this config's hash. Give the command that started the run, plus ``--resume``: another
config hash, a missing or damaged last.ckpt, or a finished run stop with exit code 2. When
last.ckpt names an MLflow run and a tracking URI is configured, that run is reopened and
continued.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from benchmark import stores
from benchmark.cli import UsageParser, fail, flag_overrides, parse_sets
from benchmark.config import ConfigError, ExperimentConfig, config_hash, flatten, load_config
from benchmark.errors import PRVRBenchError
from benchmark.naming import RunIdentity
from benchmark.registry import list_methods
from benchmark.tracker import NullTracker

if TYPE_CHECKING:        # mlflow is imported only when a tracking URI is configured
    from benchmark.tracking import MLflowRunTracker



def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="python -m benchmark.train",
                description="Train a PRVR method with the shared loop; select on val, report test.")
    p.add_argument("--list-methods", action="store_true", help="list registered methods and variants")
    p.add_argument("--method", help="registered method or variant name (see --list-methods)")
    p.add_argument("--collection", help="collection name: tvr, activitynet, charades or another")
    p.add_argument("--data-root", help="ROOT holding ROOT/<collection>/ in the MS-SL layout")
    p.add_argument("--visual-feature", help="visual feature directory under FeatureData/")
    p.add_argument("--moments", help="moments table (JSON lines: cap_id, ts, duration) for the M/V breakdown")
    p.add_argument("--relevance",
                   help="dense relevance labels (query_id, gt_video_ids) for multi-positive test")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=S")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. --set method.temperature=0.1 (repeatable)")
    p.add_argument("--config", dest="configs", action="append", default=[], metavar="FILE",
                   help="TOML config file or a saved config.json (repeatable, applied in order)")
    p.add_argument("--json-out", help="write the run record JSON here")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: no MLflow run)")
    p.add_argument("--runs-dir", help="run directory (default: $PRVR_RUNS_DIR or ./runs)")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue a killed run from RUN_DIR/last.ckpt (auto: the newest "
                        "unfinished run under <runs>/checkpoints/ with this config)")
    return p


def format_method_list() -> str:
    """Each base method with its summary, its variants indented under it."""
    entries = list_methods()
    lines = []
    for base in (e for e in entries if not e.is_variant):
        lines.append(f"{base.name:<28} {base.summary}")
        for var in (e for e in entries if e.is_variant and e.base == base.name):
            lines.append(f"  {var.name:<26} {var.summary}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    if not args.method or not args.collection:
        raise ConfigError("--method and --collection are required (or use --list-methods)")
    return load_config(args.method, args.collection, data_root=args.data_root,
                       config_files=args.configs, overrides=parse_sets(args.sets),
                       **flag_overrides(args))


def resume_dir(spec: str, cfg: ExperimentConfig) -> tuple[Path, str | None]:
    """The run directory ``--resume`` names ("auto": the newest resumable one) and the MLflow
    run id its last.ckpt records; ResumeError when the run cannot be resumed."""
    from benchmark.training.resume import check_resumable, find_latest_resumable

    chash = config_hash(cfg)
    if spec == "auto":
        run_dir = find_latest_resumable(stores.runs_dir(cfg.tracking.runs_dir) / "checkpoints",
                                        chash)
    else:
        run_dir = Path(spec).expanduser().resolve()
    loop = check_resumable(run_dir, chash)
    return run_dir, loop["run_id"]


def _open_tracker(cfg: ExperimentConfig, identity: RunIdentity,
                  run_id: str | None = None) -> NullTracker | MLflowRunTracker:
    """An MLflow run named and tagged by ``identity`` when a tracking URI is configured (the
    run ``run_id`` reopened, when given), else a NullTracker."""
    if not cfg.tracking.tracking_uri:
        return NullTracker()
    from benchmark import tracking

    if run_id is not None:
        return tracking.open_run(tracking_uri=cfg.tracking.tracking_uri,
                                 experiment=identity.experiment, run_name=identity.run_name,
                                 run_id=run_id)
    return tracking.open_identified_run(cfg.tracking.tracking_uri, identity)


def _say_tracking(cfg: ExperimentConfig, run_dir: Path, run_id: str | None) -> None:
    """What happens to MLflow on a resume, when it is not simply "the same run continues"."""
    if run_id is None and cfg.tracking.tracking_uri:
        print(f"note: the run in {run_dir} was not tracked in MLflow; the resumed epochs go "
              "to a new MLflow run", file=sys.stderr)
    elif run_id is not None and not cfg.tracking.tracking_uri:
        print(f"note: the run in {run_dir} was tracked as MLflow run {run_id}; without "
              "--tracking-uri the resumed epochs are not tracked", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_methods:
        print(format_method_list())
        return 0
    from benchmark.experiment import prepare

    try:
        cfg = config_from_args(args)
        run_dir, run_id = resume_dir(args.resume, cfg) if args.resume else (None, None)
        prepared = prepare(cfg)           # every input check runs here, before training
        if run_dir is not None:
            _say_tracking(cfg, run_dir, run_id)
            tracker = _open_tracker(cfg, prepared.identity, run_id)
        else:
            tracker = _open_tracker(cfg, prepared.identity)
    except PRVRBenchError as exc:
        return fail(str(exc))

    from benchmark.training.loop import fit

    with tracker:
        if run_dir is None or run_id is None or not cfg.tracking.tracking_uri:
            tracker.log_params(flatten(cfg))      # a reopened run has them already
        record = fit(prepared.method, prepared.splits, cfg, tracker, identity=prepared.identity,
                     run_dir=run_dir, resume=run_dir is not None)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        record.save(args.json_out)
    t = record.test
    print(f"{record.variant} on {record.collection}{' (synthetic)' if record.synthetic else ''}: "
          f"test R1 {t['R1']:.2f} R5 {t['R5']:.2f} R10 {t['R10']:.2f} R100 {t['R100']:.2f} "
          f"SumR {t['SumR']:.2f} (best epoch {record.best_epoch + 1} of {record.epochs_run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
