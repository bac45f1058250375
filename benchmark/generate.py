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
from benchmark.data.synthetic import DiagnosticFactors, generate
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
    # diagnostic factors (docs/datasets.md §8.5); the defaults are off and change no byte
    off = DiagnosticFactors()
    p.add_argument("--query-phrases", type=int, default=off.query_phrases,
                   help="HSA factor: phrases per query, one relevant (1 = off)")
    p.add_argument("--phrase-bank", type=int, default=off.phrase_bank,
                   help="distinct distractor phrase events (with --query-phrases > 1)")
    p.add_argument("--video-stretch", type=float, default=off.video_stretch,
                   help="DTA factor: videos this many times longer, moments as long (1 = off)")
    p.add_argument("--moment-parts", type=int, default=off.moment_parts,
                   help="DTA factor: an event shown in this many parts, frame by frame (1 = off)")
    p.add_argument("--teacher-time-noise", type=float, default=off.teacher_time_noise,
                   help="KRD factor: per-frame teacher noise level (0 = off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        factors = DiagnosticFactors(
            query_phrases=args.query_phrases, phrase_bank=args.phrase_bank,
            video_stretch=args.video_stretch, moment_parts=args.moment_parts,
            teacher_time_noise=args.teacher_time_noise)
        target = generate(args.profile, args.scale, args.seed, args.out,
                          anomalies=args.anomalies, overwrite=args.overwrite, factors=factors,
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
