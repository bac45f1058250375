"""`python -m bench`: speed and memory of the hot paths, in one run, never asserted.

Each topic module of ``bench/`` (``TOPICS``) exposes ``run(data_root, device) -> dict`` of named
results (speed as ratios against a naive approach measured in the same run, peak memory in MB).
This CLI generates (once, cached) the synthetic ``small`` TVR collection they share, runs every
topic (or the ones named with ``--only``), prints one table and writes the results as JSON.

``--scale full`` runs the full-size measurements instead (``bench/full.py``: load time cold and
cached, peak anonymous and file-backed memory, training steps extrapolated to an epoch, full
test evaluation) on the synthetic full TVR (21 GB, generated once under ``<runs>/data``); it is
not part of CI and takes about an hour on 2 cores. ``--methods`` picks the methods.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmark import stores

TOPICS = ("dl_dkd", "evaluator", "flops", "kdc_net", "ms_sl", "sweeps", "training")
PROFILE, SCALE = "tvr", "small"


def _runner(name: str):
    """The ``run`` function of one topic, imported on demand (only the ``sweeps`` topic pulls in
    Optuna and MLflow, so the others also run where those are not installed)."""
    return importlib.import_module(f"bench.{name}").run


def synthetic_tvr(runs_dir: Path, scale: str = SCALE) -> Path:
    """The synthetic TVR collection of ``scale`` under <runs>/data, generated once (the same
    cache as the sweeps use)."""
    from benchmark.data.prepared import prepare_data

    root, _ = prepare_data(PROFILE, None, runs_dir, profile=PROFILE, scale=scale)
    return root


def _full(data_root: Path, device: str, methods: list[str] | None) -> dict:
    from bench import full

    return full.run(data_root, device, tuple(methods) if methods else full.METHODS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=TOPICS, metavar="TOPIC",
                        help=f"topics to run (default: all of {', '.join(TOPICS)})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--json-out", default=None,
                        help="default: <runs>/bench.json (<runs>/bench-full.json with --scale full)")
    parser.add_argument("--scale", default=SCALE, choices=[SCALE, "full"],
                        help="full: the full-size TVR measurements of bench/full.py only")
    parser.add_argument("--methods", nargs="*", default=None, metavar="METHOD",
                        help="--scale full: methods to measure (default: ms-sl dl-dkd++ kdc-net)")
    args = parser.parse_args(argv)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    runs_dir = stores.runs_dir(args.runs_dir)
    if args.scale == "full" and args.only:
        parser.error("--only picks small-scale topics; --scale full runs bench/full.py")
    data_root = synthetic_tvr(runs_dir, args.scale)
    names = ["full"] if args.scale == "full" else (args.only or list(TOPICS))

    results: dict[str, dict] = {"_meta": {"device": device, "torch": torch.__version__,
                                          "threads": torch.get_num_threads(),
                                          "data": str(data_root), "synthetic": True}}
    failed = []
    for name in names:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            out = (_full(data_root, device, args.methods) if name == "full"
                   else _runner(name)(data_root, device))
        except Exception:  # report every topic; fail the command at the end
            traceback.print_exc()
            failed.append(name)
            continue
        out = dict(out)
        out["bench_wall_seconds"] = round(time.perf_counter() - start, 2)
        results[name] = out
        for key, value in out.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"  {key:<48} {shown}", flush=True)

    default_out = runs_dir / ("bench-full.json" if args.scale == "full" else "bench.json")
    path = Path(args.json_out) if args.json_out else default_out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"results written to {path}")
    if failed:
        print(f"FAILED benchmark topics: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
