"""Frame-level knowledge distillation on positive pairs (DL-DKD ``clip_kl_only_pos``).

docs/methods.md §5.3: for each query i and its positive video y(i), over the valid frames
t = 1..n_{y(i)} of that video,

    L_KD = Σ_i KL( softmax_t(s^T_{i,t}/τ) ‖ softmax_t(s^S_{i,t}/τ) )

summed over frames and queries in the reference (its magnitude grows with N_q, §5.6.3);
``reduction="mean"`` averages over queries instead. Padded frames carry zero probability on
both sides and contribute exactly 0. KDC-Net's KRD passes its own refined target distribution
through ``target`` (docs/methods.md §9.3.5).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from benchmark.precision import float32_loss
from methods.layers.pooling import mask_logits


@float32_loss
def frame_kd_loss(student_frame_scores: Tensor, teacher_frame_scores: Tensor | None, mask: Tensor,
                  *, temperature: float = 0.2, reduction: Literal["sum", "mean"] = "sum",
                  target: Tensor | None = None) -> Tensor:
    """KL(P ‖ softmax(student/τ)) over the valid frames of each query's positive video.

    P = softmax(teacher/τ) over valid frames, or ``target`` when given (a distribution over
    the valid frames; terms with P = 0 count 0, i.e. 0·log 0 = 0).

    Shapes: student_frame_scores, teacher_frame_scores, mask, target: (Nq, T); returns a
    scalar. ``mask`` is 1 on valid frames of the positive video, 0 on padding.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"frame_kd_loss: reduction must be 'sum' or 'mean', got {reduction!r}")
    if temperature <= 0:
        raise ValueError(f"frame_kd_loss: temperature must be > 0, got {temperature}")
    valid = mask > 0                                                                # (Nq, T)
    log_q = torch.log_softmax(mask_logits(student_frame_scores, valid) / temperature, dim=1)  # (Nq, T)
    if target is None:
        if teacher_frame_scores is None:
            raise ValueError("frame_kd_loss: give teacher_frame_scores or target")
        log_p = torch.log_softmax(mask_logits(teacher_frame_scores, valid) / temperature, dim=1)  # (Nq, T)
        p = log_p.exp()
    else:
        p = target
        log_p = torch.log(torch.where(p > 0, p, torch.ones_like(p)))              # log 1 = 0 where p = 0
    keep = valid & (p > 0)                                                          # (Nq, T)
    terms = torch.where(keep, p * (log_p - log_q), torch.zeros_like(log_q))         # (Nq, T)
    per_query = terms.sum(dim=1)                                                    # (Nq,)
    return per_query.sum() if reduction == "sum" else per_query.mean()
