"""``python -m benchmark.report``: tracked runs -> tables, figures and an index (reports/build.py).

Exit status 0 on success; 2 with one line on stderr when the selection matches no run, runs
lack per-query ranks, a store cannot be read, or an argument is malformed.
"""
from __future__ import annotations

import argparse
import os
import sys

from benchmark.errors import PRVRBenchError

os.environ.setdefault("MPLBACKEND", "Agg")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.report",
        description="Render ablation tables, R@k by M/V, seed statistics and sweep figures from "
                    "the MLflow store. Default selection: the latest study and its complete "
                    "trials; with no study, all finished runs.")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, then "
                        "sqlite:///runs/mlflow.db)")
    p.add_argument("--experiment", action="append", default=[], metavar="E",
                   help="MLflow experiment name (repeatable; default: all)")
    p.add_argument("--study", default=None, help="study name (its parent run and trials)")
    p.add_argument("--method", action="append", default=[], metavar="M",
                   help="base method or variant (repeatable)")
    p.add_argument("--collection", action="append", default=[], metavar="C",
                   help="collection (repeatable)")
    p.add_argument("--tag", action="append", default=[], metavar="K=V",
                   help="keep runs whose tag K equals V (repeatable)")
    p.add_argument("--out", default=None, help="report folder (default runs/report)")
    p.add_argument("--mv-edges", default=None,
                   help="M/V bin edges, comma-separated (right-closed bins); default: the edges "
                        "the runs recorded (eval.mv_edges), else benchmark.mv.DEFAULT_MV_EDGES")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL for sweep reports (default $PRVR_OPTUNA_STORAGE, "
                        "then the parent run's optuna_storage tag, then sqlite:///runs/optuna.db)")
    p.add_argument("--no-log", action="store_true",
                   help="do not log the report folder to the study's parent run")
    p.add_argument("--quiet", action="store_true", help="no table preview on the terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from benchmark import stores
    from reports.build import build_report
    from reports.collect import Selection, parse_tags
    from reports.mv import parse_edges

    try:
        sel = Selection(tracking_uri=stores.mlflow_uri(args.tracking_uri),
                        experiments=tuple(args.experiment), study=args.study,
                        methods=tuple(args.method), collections=tuple(args.collection),
                        tags=parse_tags(args.tag))
        edges = parse_edges(args.mv_edges) if args.mv_edges is not None else None
        result = build_report(sel, args.out, mv_edges=edges, storage=args.storage,
                              log_to_mlflow=not args.no_log)
    except PRVRBenchError as exc:   # bad input or store; a bug keeps its traceback
        msg = " ".join(str(exc).split())
        print(f"report: error: {msg}", file=sys.stderr)
        return 2
    if not args.quiet:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:          # piped or captured: do not squeeze to 80 columns
            console = Console(width=160)
        from reports.tables import to_rich

        console.print(to_rich(result.ablation))
        for note in result.notes:
            console.print(f"[yellow]note:[/yellow] {note}", markup=True, highlight=False)
    where = f"; logged to MLflow run {result.logged_run_id} (artifact path report/)" \
        if result.logged_run_id else ""
    print(f"report: {len(result.files)} files in {result.out}; index {result.index}{where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
