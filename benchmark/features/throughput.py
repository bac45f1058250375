"""Extraction throughput without any download: ``python -m benchmark.features.throughput``.

Builds a randomly initialised CLIP of a given architecture (``vit-b32``: the
openai/clip-vit-base-patch32 shapes, transformers' CLIPConfig defaults; ``tiny``: 8-d, 32 px)
in a temporary folder, writes synthetic H.264 videos with PyAV, and runs ``from-videos`` on
them with the CLIP student (one CLIP forward per frame). Speed does not depend on the weight
values, so the ``vit-b32`` figure is the real model's speed on this machine; the features are
meaningless. It prints one JSON line: frames/s end to end (decode + preprocess + encode) and
for the encoder alone (a batch of preprocessed frames, timed separately).

    python -m benchmark.features.throughput --arch vit-b32 --videos 4 --seconds 60 \
        [--width 640 --height 360 --video-fps 30] [--batch-size 64] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from benchmark.console import write_line

from . import extract
from .models import ClipImageEncoder, resolve_device


def build_clip(directory: Path, arch: str) -> Path:
    from transformers import CLIPConfig, CLIPModel

    if arch == "vit-b32":
        config = CLIPConfig()        # defaults: ViT-B/32 vision tower, 512-d projections
    elif arch == "tiny":
        config = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2),
                            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=32, patch_size=16),
                            projection_dim=8)
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    return directory


def write_video(path: Path, seconds: float, fps: int, width: int, height: int, seed: int) -> None:
    """Moving noise, H.264 (yuv420p): decoding cost close to that of real footage."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height, width + 2 * int(seconds * fps), 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.ascontiguousarray(base[:, 2 * i:2 * i + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.features.throughput")
    p.add_argument("--arch", choices=("vit-b32", "tiny"), default="vit-b32")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--video-fps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--text-arch", choices=("roberta-large", "tiny"),
                   help="also time a randomly initialised RoBERTa of these shapes on captions "
                        "of --text-tokens tokens (encoder alone, captions/s)")
    p.add_argument("--text-tokens", type=int, default=20, help="tokens per caption, <s> and </s> included")
    args = p.parse_args(argv)
    if args.videos < 2:
        p.error("--videos must be at least 2 (one for train, one for test)")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = _measure(args)
    finally:
        torch.set_num_threads(threads)       # an in-process caller keeps its thread count
    print(json.dumps(result))
    return 0


def _measure(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="prvr-throughput-") as tmp:
        root = Path(tmp)
        clip = build_clip(root / "clip", args.arch)
        videos = root / "videos"
        videos.mkdir()
        lines = []
        for i in range(args.videos):
            write_video(videos / f"v{i}.mp4", args.seconds, args.video_fps, args.width, args.height, i)
            lines += [f"v{i}#0 a video", f"v{i}#1 the same video"]
        (root / "captions.txt").write_text("\n".join(lines) + "\n")
        write_line(f"throughput: {args.videos} videos of {args.seconds:g} s written; extracting")
        report = extract.from_videos(extract.VideoJob(
            videos=str(videos), collection="bench", out=str(root / "out"),
            captions=str(root / "captions.txt"), split_ratio="1,0,1", clip_model=str(clip),
            batch_size=args.batch_size, device=args.device))
        encoder = ClipImageEncoder(str(clip), resolve_device(args.device))
        size = encoder.preprocess.crop
        batch = [torch.randn(3, size, size) for _ in range(args.batch_size)]
        encoder.encode(batch)                                   # warm-up
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        started, rounds = time.perf_counter(), 3
        for _ in range(rounds):
            encoder.encode(batch)
        encode_fps = rounds * args.batch_size / (time.perf_counter() - started)
    text = _text_rate(args) if args.text_arch else {}
    return {**text, "arch": args.arch, "device": str(resolve_device(args.device)),
            "torch_threads": torch.get_num_threads(), "videos": args.videos,
            "video": f"{args.width}x{args.height} {args.video_fps} fps {args.seconds:g} s H.264",
            "frames": report["frames"], "end_to_end_frames_per_s": report["frames_per_second_now"],
            "encoder_only_frames_per_s": round(encode_fps, 1), "batch_size": args.batch_size}


def _text_rate(args: argparse.Namespace) -> dict:
    """Captions/s of a random RoBERTa of the named shapes, last hidden layer, batch of
    ``--batch-size`` captions of ``--text-tokens`` tokens (tokenisation not included)."""
    from transformers import RobertaConfig, RobertaModel

    if args.text_arch == "roberta-large":
        config = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24,
                               num_attention_heads=16, intermediate_size=4096,
                               max_position_embeddings=514, type_vocab_size=1)
    else:
        config = RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    model: Any = RobertaModel(config, add_pooling_layer=False)
    model = model.to(device).eval()
    ids = torch.randint(3, config.vocab_size, (args.batch_size, args.text_tokens), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)                # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, rounds = time.perf_counter(), 3
        for _ in range(rounds):
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
    rate = rounds * args.batch_size / (time.perf_counter() - started)
    return {"text_arch": args.text_arch, "text_tokens": args.text_tokens,
            "text_captions_per_s": round(rate, 1)}


if __name__ == "__main__":
    sys.exit(main())
