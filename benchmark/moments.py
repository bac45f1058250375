"""CLI: rebuild a moments table from upstream annotations (docs/datasets.md §5, §7).

    python -m benchmark.moments --format tvr --input tvr_val_release.jsonl --out tvr_moments.jsonl
    python -m benchmark.moments --format activitynet --input val.json \
        --order activitynetdenseval.gt.jsonl --out activitynet_moments.jsonl.gz
    python -m benchmark.moments --format charades --input charades_sta_test.txt \
        --durations Charades_v1_test.csv --out charades_moments.jsonl

Place the output at ``<root>/<c>/TextData/<c>_moments.jsonl`` (or pass it as ``data.moments``)
to get the M/V breakdown on any split. ``--order`` restricts and reorders the table to the
cap_ids of a caption file or a JSON-lines file with ``query_id``/``cap_id`` fields. A ``.gz``
output is written with fixed gzip metadata, so equal inputs give equal bytes.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmark.data.annotations import convert, write_moments
from benchmark.data.text import video_id_of
from benchmark.errors import PRVRBenchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.moments",
                                     description="Upstream moment annotations -> prvr-bench moments table.")
    parser.add_argument("--format", required=True, choices=("tvr", "activitynet", "charades"))
    parser.add_argument("--input", required=True, help="tvr_*_release.jsonl, ActivityNet {train,val}.json "
                                                       "or charades_sta_*.txt")
    parser.add_argument("--durations", help="Charades csv with the 'length' column (charades only)")
    parser.add_argument("--order", help="caption file or *.gt.jsonl whose cap_ids select and order the rows")
    parser.add_argument("--out", required=True, help="output path (.jsonl, or .jsonl.gz)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        moments = convert(args.format, args.input, durations=args.durations, order=args.order)
        path = write_moments(moments, args.out)
    except PRVRBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mv = moments.mv()
    videos = len({video_id_of(c) for c in moments.cap_ids})
    print(f"wrote {path}: {len(moments)} queries, {videos} videos, mean M/V {np.mean(mv):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
