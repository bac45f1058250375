"""CLI: ``python -m benchmark.generate --profile tvr --scale small --seed 0 --out ROOT``.

Writes ``ROOT/<profile>/`` in the MS-SL layout with a ``SYNTHETIC`` marker
(benchmark/data/synthetic.py; profiles in benchmark/data/profiles.py, docs/datasets.md §8).
"""
from __future__ import annotations

import argparse
import sys
import time

from benchmark.console import generation_reporter
from benchmark.data.profiles import PROFILES, SCALES
from benchmark.data.synthetic import generate
from benchmark.errors import PRVRBenchError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.generate",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--profile", required=True, choices=PROFILES, help="dataset shape to imitate")
    p.add_argument("--scale", default="small", choices=SCALES,
                   help="tiny (tests), small (sweep default), full (real split sizes)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (same seed -> same bytes)")
    p.add_argument("--out", required=True, help="data root; the collection goes to OUT/<profile>/")
    p.add_argument("--anomalies", action="store_true",
                   help="inject the real annotation anomalies of docs/datasets.md §5.5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<profile>/")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        target = generate(args.profile, args.scale, args.seed, args.out,
                          anomalies=args.anomalies, overwrite=args.overwrite,
                          progress=generation_reporter(lambda m: print(m, file=sys.stderr,
                                                                       flush=True)))
    except PRVRBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote SYNTHETIC {args.profile} collection (scale {args.scale}, seed {args.seed}) to "
          f"{target} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
