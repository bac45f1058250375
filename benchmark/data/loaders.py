"""Video-centric training batches (docs/methods.md §1.4).

A sample is a video with all of its captions. Each epoch shuffles the videos with
``torch.randperm(Nv, generator=generator)`` (what ``DataLoader(shuffle=True)`` does), cuts
the permutation into batches of ``batch_size`` videos (the last one may be smaller), and sorts
each batch in descending order of frame count (MS-SL, GMMFormer) or caption count (DL-DKD,
DL-DKD++); the sort is stable, like Python's ``list.sort(reverse=True)`` in the reference
collate. Captions are flattened so that each video's queries are contiguous and
``query_video[i]`` is the batch position of query i's video.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from .batch import TrainBatch
from .split import SplitData

SORT_KEYS = ("frames", "captions")


def steps_per_epoch(split: SplitData, batch_size: int) -> int:
    """Batches per epoch: ``ceil(Nv / batch_size)`` (no dropped last batch)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return math.ceil(split.num_videos / batch_size)


def epoch_order(split: SplitData, batch_size: int, generator: torch.Generator,
                sort_by: str = "frames") -> list[np.ndarray]:
    """Video indices of every batch of one epoch, each sorted as the collate sorts it.

    Shapes: returns ``steps_per_epoch`` arrays (B,) int64.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {SORT_KEYS}, got {sort_by!r}")
    steps = steps_per_epoch(split, batch_size)
    permutation = torch.randperm(split.num_videos, generator=generator).numpy()  # (Nv,)
    key = split.frame_counts if sort_by == "frames" else split.caption_counts
    batches = []
    for step in range(steps):
        videos = permutation[step * batch_size:(step + 1) * batch_size]
        # stable descending sort == Python's sort(key=len, reverse=True)
        batches.append(videos[np.argsort(-key[videos], kind="stable")])
    return batches


def collate(split: SplitData, videos: np.ndarray) -> TrainBatch:
    """One training batch for videos in the given order (teacher fields when loaded with it).

    Shapes: videos (B,) -> queries (Nq, L, d_q), videos (B, T, d_v), query_video (Nq,) int64.
    """
    query_index, query_video = split.queries_of(videos)
    teacher = split.has_teacher
    return TrainBatch(queries=split.query_batch(query_index, teacher=teacher),
                      videos=split.video_batch(videos, teacher=teacher),
                      query_video=torch.from_numpy(query_video))


def train_batches(split: SplitData, batch_size: int, generator: torch.Generator,
                  sort_by: str = "frames") -> Iterator[TrainBatch]:
    """One epoch of shuffled, collated training batches (docs/methods.md §1.4)."""
    for videos in epoch_order(split, batch_size, generator, sort_by):
        yield collate(split, videos)
