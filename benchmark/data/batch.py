"""Padded tensor batches exchanged between the data layer and the methods.

These three dataclasses are the whole data contract of a method: a method never sees file
paths, caption files or HDF5 handles, only these tensors.

Vocabulary: ``Nq`` queries, ``B`` videos in a batch, ``T`` frames (≤ 128 after sampling),
``L`` query tokens (≤ 30), ``C`` clips (32), ``d_q``/``d_v``/``d_t`` query, video and teacher
feature sizes. Masks are float tensors with 1 for valid positions and 0 for padding, as in the
reference code (docs/methods.md §1.4).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


def _move(obj, device: torch.device | str, non_blocking: bool = False):
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = value.to(device, non_blocking=non_blocking)
        elif hasattr(value, "to") and hasattr(value, "__dataclass_fields__"):
            changes[f.name] = value.to(device, non_blocking=non_blocking)
    return replace(obj, **changes)


@dataclass(frozen=True)
class QueryBatch:
    """Query token features.

    Shapes: tokens (Nq, L, d_q) L2-normalised per token and truncated to 30 tokens;
    mask (Nq, L); teacher (Nq, d_t) raw CLIP sentence features or None (training only,
    present when the method requires ``"teacher"``).
    """

    tokens: Tensor
    mask: Tensor
    teacher: Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device, non_blocking: bool = False) -> "QueryBatch":
        return _move(self, device, non_blocking)


@dataclass(frozen=True)
class VideoBatch:
    """Video features.

    Shapes: frames (B, T, d_v) sampled to ≤ 128 rows and L2-normalised (docs/methods.md §1.3
    step 1); frame_mask (B, T); clips (B, 32, d_v) or None (present when the method requires
    ``"clips"``, §1.3 step 2); teacher_frames (B, T, d_t) raw CLIP frame features aligned to
    the student frame grid and padded with the same ``frame_mask``, or None (training only).
    """

    frames: Tensor
    frame_mask: Tensor
    clips: Tensor | None = None
    teacher_frames: Tensor | None = None

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device, non_blocking: bool = False) -> "VideoBatch":
        return _move(self, device, non_blocking)


@dataclass(frozen=True)
class TrainBatch:
    """One video-centric training batch (docs/methods.md §1.4).

    ``query_video[i]`` is the position in ``videos`` of query i's video; the queries of one
    video are contiguous and videos are ordered as the collate function sorted them.

    Shapes: query_video (Nq,) int64.
    """

    queries: QueryBatch
    videos: VideoBatch
    query_video: Tensor

    def to(self, device, non_blocking: bool = False) -> "TrainBatch":
        return _move(self, device, non_blocking)
