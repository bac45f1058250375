"""``python -m benchmark.features``: an MS-SL-layout collection from your own videos and captions.

    python -m benchmark.features from-videos --videos DIR|LIST --collection C --out ROOT \
        (--captions FILE --split-ratio 0.8,0.1,0.1 [--seed 0] |
         --train-captions F --val-captions F --test-captions F) [--moments FILE] \
        [--fps 0.6667] [--clip-model NAME|DIR] [--student clip|timm:NAME|torchvision:NAME] \
        [--visual-feature NAME] [--batch-size 64] [--device auto|cpu|cuda] [--skip-bad] [--overwrite]
    python -m benchmark.features from-videos --only teacher --videos DIR --collection C --out ROOT \
        --visual-feature EXISTING [--clip-model ...]
    python -m benchmark.features texts --collection C --out ROOT [--text-model NAME|DIR] \
        [--clip-model NAME|DIR] [--text-layer -1] [--max-tokens 64] [--only roberta|teacher] \
        [--batch-size 64] [--device auto|cpu|cuda] [--overwrite]

Run ``from-videos`` first (it writes the caption split files), then ``texts``. Rerunning a
killed command resumes it. Bad input (a file, a video, a model that cannot be loaded) stops
with one line naming it and exit status 2; ``--skip-bad`` leaves bad videos out instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from benchmark.cli import UsageParser, fail
from benchmark.errors import PRVRBenchError

MISSING_EXTRA = ("python -m benchmark.features needs the 'features' extra "
                 "(pip install -e '.[features]'): {exc}")


def build_parser() -> argparse.ArgumentParser:
    from .decode import DEFAULT_FPS
    from .models import DEFAULT_CLIP_MODEL, DEFAULT_TEXT_MODEL

    parser = UsageParser(prog="python -m benchmark.features",
                         description="Build an MS-SL-layout collection (student BigFile, CLIP "
                                     "teacher, RoBERTa and CLIP query features) from raw videos.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--collection", required=True, help="collection name (ROOT/<collection>/)")
        p.add_argument("--out", required=True, metavar="ROOT", help="data root to write into")
        p.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL,
                       help=f"CLIP model folder or name (default {DEFAULT_CLIP_MODEL})")
        p.add_argument("--batch-size", type=int, default=64, help="frames or captions per forward pass")
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        p.add_argument("--overwrite", action="store_true",
                       help="extract again although the output files exist")

    v = sub.add_parser("from-videos", help="frames -> CLIP teacher HDF5 + student BigFile, "
                                           "caption splits, moments table")
    common(v)
    v.add_argument("--videos", required=True, help="directory of video files (id = file stem) or "
                                                   "a list file (a path, or 'video_id path', per line)")
    v.add_argument("--captions", help="one caption file ('cap_id caption', cap_id = video#k), "
                                      "split by --split-ratio")
    v.add_argument("--split-ratio", help="TRAIN,VAL,TEST shares of the videos (VAL 0: val = test)")
    v.add_argument("--seed", type=int, default=0, help="seed of the --split-ratio shuffle")
    for split in ("train", "val", "test"):
        v.add_argument(f"--{split}-captions", help=f"caption file of the {split} split")
    v.add_argument("--moments", help="'cap_id start end [duration]' per line (seconds): "
                                     "the moments table for M/V")
    v.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"frames sampled per second (default {DEFAULT_FPS:.4f}: one per 1.5 s, TVR's step)")
    v.add_argument("--student", default="clip",
                   help="student visual backbone: clip (the CLIP frame features, default), "
                        "timm:NAME or torchvision:NAME (library must be installed)")
    v.add_argument("--visual-feature", help="student BigFile folder name under FeatureData/ "
                                            "(default clip_vit_b32, or the backbone's name)")
    v.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable videos (named on stderr and in the report) "
                        "instead of stopping")
    v.add_argument("--only", choices=("teacher",),
                   help="teacher: only the CLIP frame file, matching the frame counts of the "
                        "existing BigFile named by --visual-feature")

    t = sub.add_parser("texts", help="caption files -> RoBERTa token and CLIP text HDF5 files")
    common(t)
    t.add_argument("--text-model", default=DEFAULT_TEXT_MODEL,
                   help=f"token feature model folder or name (default {DEFAULT_TEXT_MODEL})")
    t.add_argument("--text-layer", type=int, default=-1,
                   help="hidden state to store: -1 the last layer (default), 0 the embeddings")
    t.add_argument("--max-tokens", type=int, default=64,
                   help="tokens kept per caption, <s> and </s> included (training reads the first 30)")
    t.add_argument("--only", choices=("roberta", "teacher"),
                   help="only the RoBERTa file, or only the CLIP text (teacher) file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        from . import extract
    except ImportError as exc:
        return fail(MISSING_EXTRA.format(exc=exc))
    try:
        if args.command == "from-videos":
            splits = {s: getattr(args, f"{s}_captions") for s in ("train", "val", "test")
                      if getattr(args, f"{s}_captions")}
            result = extract.from_videos(extract.VideoJob(
                videos=args.videos, collection=args.collection, out=args.out,
                captions=args.captions, split_ratio=args.split_ratio, split_files=splits,
                seed=args.seed, moments=args.moments, fps=args.fps, clip_model=args.clip_model,
                student=args.student, visual_feature=args.visual_feature,
                batch_size=args.batch_size, device=args.device, skip_bad=args.skip_bad,
                overwrite=args.overwrite, only=args.only))
        else:
            result = extract.texts(extract.TextJob(
                collection=args.collection, out=args.out, text_model=args.text_model,
                clip_model=args.clip_model, text_layer=args.text_layer,
                max_tokens=args.max_tokens, batch_size=args.batch_size, device=args.device,
                overwrite=args.overwrite, only=args.only))
    except PRVRBenchError as exc:
        return fail(str(exc))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
