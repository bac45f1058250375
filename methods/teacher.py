"""Parameter-free CLIP teacher scores of DL-DKD / DL-DKD++ (docs/methods.md §5.2, §6.2).

The teacher is the frozen CLIP ViT-B/32 features shipped with a training batch: a sentence
feature c_i per query (``QueryBatch.teacher``) and frame features G_{v,t} aligned to the
student frame grid (``VideoBatch.teacher_frames``). It is used in training only and has no
parameters, so every function here runs without gradient.

* per-frame cosines s^T_{i,t,v} = cos(c_i, G_{v,t}), padded frames set to −1e10 with the
  *student* frame mask (the KD target, §5.3);
* video-level soft-target scores U^T_{iv} = max_t c_i·G_{v,t} over valid frames on the raw,
  non-normalised CLIP features (``kind="raw_dot"``, the reference, §6.2 and §6.8.5) or
  max_t cos(c_i, G_{v,t}) (``kind="cosine"``, the switch).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.data.batch import TrainBatch
from benchmark.errors import PRVRBenchError
from benchmark.precision import float32_loss
from methods.errors import MethodConfigError
from methods.layers.pooling import mask_logits


class TeacherMissingError(PRVRBenchError, ValueError):
    """A method that distils from the CLIP teacher got a batch without teacher features."""


class TeacherShapeError(PRVRBenchError, ValueError):
    """Teacher features do not line up with the student frames or queries."""


def require_teacher(batch: TrainBatch, method: str) -> tuple[Tensor, Tensor]:
    """(c, G) of ``batch``, or a clear error naming ``method`` and the missing field.

    Shapes: -> c (Nq, d_t), G (B, T, d_t) with (B, T) equal to the student frame mask.
    """
    c, G = batch.queries.teacher, batch.videos.teacher_frames
    if c is None or G is None:
        missing = [name for name, value in (("QueryBatch.teacher", c), ("VideoBatch.teacher_frames", G))
                   if value is None]
        raise TeacherMissingError(
            f"method {method!r} distils from CLIP teacher features, but the training batch has no "
            f"{' and no '.join(missing)}: load the split with requires={{'teacher'}} and make sure "
            "the collection has teacher files (docs/datasets.md)")
    if G.shape[:2] != batch.videos.frame_mask.shape:
        raise TeacherShapeError(f"method {method!r}: teacher_frames {tuple(G.shape)} do not match "
                                f"the student frame mask {tuple(batch.videos.frame_mask.shape)}")
    if c.shape[0] != len(batch.queries) or c.shape[-1] != G.shape[-1]:
        raise TeacherShapeError(f"method {method!r}: teacher sentence features {tuple(c.shape)} do "
                                f"not match {len(batch.queries)} queries / frame size {G.shape[-1]}")
    return c, G


@torch.no_grad()
@float32_loss
def teacher_frame_cosines(sentences: Tensor, frames: Tensor, frame_mask: Tensor) -> Tensor:
    """s^T_{i,v,t} = cos(c_i, G_{v,t}), padded frames −1e10 (docs/methods.md §5.2).

    Shapes: sentences (Nq, d_t); frames (B, T, d_t); frame_mask (B, T) -> (Nq, B, T).
    """
    cos = torch.einsum("qd,btd->qbt", F.normalize(sentences, dim=-1),
                       F.normalize(frames, dim=-1))                               # (Nq, B, T)
    return mask_logits(cos, frame_mask[None])                                     # (Nq, B, T)


@torch.no_grad()
@float32_loss
def positive_teacher_frame_cosines(sentences: Tensor, frames: Tensor, frame_mask: Tensor,
                                   query_video: Tensor) -> Tensor:
    """The positive-pair slice s^T_{i,·,y(i)} of :func:`teacher_frame_cosines`, computed
    without the (Nq, B, T) tensor.

    Shapes: sentences (Nq, d_t); frames (B, T, d_t); frame_mask (B, T); query_video (Nq,)
    -> (Nq, T).
    """
    own = F.normalize(frames, dim=-1)[query_video]                                # (Nq, T, d_t)
    cos = torch.einsum("qd,qtd->qt", F.normalize(sentences, dim=-1), own)         # (Nq, T)
    return mask_logits(cos, frame_mask[query_video])                              # (Nq, T)


@torch.no_grad()
@float32_loss
def teacher_video_scores(sentences: Tensor, frames: Tensor, frame_mask: Tensor, *,
                         kind: Literal["raw_dot", "cosine"] = "raw_dot") -> Tensor:
    """U^T_{iv} = max over valid t of c_i·G_{v,t} (raw) or cos(c_i, G_{v,t}) (docs/methods.md §6.2).

    Shapes: sentences (Nq, d_t); frames (B, T, d_t); frame_mask (B, T) -> (Nq, B).
    """
    if kind == "raw_dot":
        dots = torch.einsum("qd,btd->qbt", sentences, frames)                     # (Nq, B, T)
        return mask_logits(dots, frame_mask[None]).max(dim=2).values              # (Nq, B)
    if kind == "cosine":
        return teacher_frame_cosines(sentences, frames, frame_mask).max(dim=2).values
    raise MethodConfigError(f"teacher_soft_targets must be 'raw_dot' or 'cosine', got {kind!r}")
