"""Tiny models and videos for the feature-extraction tests (no network, a few seconds).

* ``tiny_models(dir)``: a randomly initialised CLIP (8-d projections, 32-px images) and RoBERTa
  (16-d) saved with word-level tokenizers built here with the ``tokenizers`` library;
* ``write_video(path, seconds, fps)``: an MPEG-4 file of moving colour frames, made with PyAV;
* ``make_dataset(dir, n)``: n videos, a caption file (two captions each) and a moments file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ("a person opens the door and walks into kitchen then sits down on chair while "
         "talking to friend who laughs at dog running around table").split()
SPECIAL = ["<s>", "<pad>", "<unk>", "</s>"]          # RoBERTa needs <pad> = 1


def _tokenizer(directory: Path, max_length: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=max_length)
    fast.save_pretrained(directory)


def tiny_models(root: Path) -> tuple[Path, Path]:
    """(clip_dir, roberta_dir), built from configs with fixed seeds."""
    import torch
    from transformers import CLIPConfig, CLIPModel, RobertaConfig, RobertaModel

    vocab = len(SPECIAL) + len(WORDS)
    clip_dir, roberta_dir = root / "tiny-clip", root / "tiny-roberta"
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=0, eos_token_id=3, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=16),
        projection_dim=8))
    clip.save_pretrained(clip_dir)
    _tokenizer(clip_dir, 77)
    roberta = RobertaModel(RobertaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
        eos_token_id=3), add_pooling_layer=False)
    roberta.save_pretrained(roberta_dir)
    _tokenizer(roberta_dir, 64)
    return clip_dir, roberta_dir


def write_video(path: Path, seconds: float, fps: int = 10, size: tuple[int, int] = (48, 32),
                seed: int = 0) -> Path:
    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(round(seconds * fps))):
            frame = np.roll(base, shift=3 * i, axis=1)
            frame[..., i % 3] = (frame[..., i % 3] // 2 + (20 * i) % 128).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_dataset(root: Path, n_videos: int = 6) -> dict[str, Path]:
    """Videos v0..v{n-1} of 2-7 s, two captions each, and their moments."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    captions, moments = [], []
    for i in range(n_videos):
        seconds = 2.0 + (i * 1.3) % 5
        write_video(videos / f"v{i}.mp4", seconds, seed=i)
        for k in range(2):
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
            captions.append(f"v{i}#{k} {words}")
            start = float(rng.uniform(0, seconds / 2))
            moments.append(f"v{i}#{k} {start:.2f} {start + seconds / 3:.2f}")
    (root / "captions.txt").write_text("\n".join(captions) + "\n")
    (root / "moments.txt").write_text("\n".join(moments) + "\n")
    return {"videos": videos, "captions": root / "captions.txt", "moments": root / "moments.txt"}
