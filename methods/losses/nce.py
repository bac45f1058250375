"""InfoNCE losses on unnormalised dot-product scores (docs/methods.md §3.3, §3.4).

No temperature: the logits are raw dot products, as in the reference.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.precision import float32_loss


@float32_loss
def clip_nce(U: Tensor, query_video: Tensor) -> Tensor:
    """``clip_nce`` (§3.3), InfoNCE with a multi-positive v2t side:

    ℒ = (1/N_q) Σ_i [LSE_v U_iv − U_{i,y(i)}] + (1/B) Σ_v [LSE_i U_iv − LSE_{i: y(i)=v} U_iv].

    A video with no query in the batch adds 0 to the v2t sum (the reference fills those
    entries with zeros and still divides by B).

    Shapes: U (Nq, B); query_video (Nq,) int64 in [0, B) -> scalar.
    """
    num_queries, num_videos = U.shape
    query_video = query_video.to(U.device)
    rows = torch.arange(num_queries, device=U.device)
    t2v = (torch.logsumexp(U, dim=1) - U[rows, query_video]).mean()

    Ut = U.t()  # (B, Nq)
    own = query_video[None, :] == torch.arange(num_videos, device=U.device)[:, None]  # (B, Nq)
    has_pos = own.any(dim=1, keepdim=True)  # (B, 1)
    # rows without a positive get a finite dummy so no -inf/NaN reaches the gradient
    positives = torch.where(has_pos, Ut.masked_fill(~own, float("-inf")), torch.zeros_like(Ut))
    per_video = torch.logsumexp(Ut, dim=1) - torch.logsumexp(positives, dim=1)  # (B,)
    v2t = (per_video * has_pos.squeeze(1)).sum() / num_videos
    return t2v + v2t


@float32_loss
def frame_nce(U: Tensor, *, diagonal_once: bool = False, exclude: Tensor | None = None) -> Tensor:
    """``frame_nce`` (§3.4): one joint row-and-column softmax per anchor i,

    ℒ = (1/N) Σ_i [LSE({U_ij}_j ∪ {U_ji}_j) − U_ii]

    over 2N logits, so the positive U_ii appears **twice** in the denominator (reference).
    ``diagonal_once=True`` (fix, §4.6 item 5) keeps it once. ``exclude[i, j]`` (fix, §4.6
    item 3) drops U_ij from anchor i's row half and from anchor j's column half.

    Shapes: U (N, N); exclude (N, N) bool or None (diagonal ignored) -> scalar.
    """
    n = U.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=U.device)
    logits = torch.cat([U, U.t()], dim=1)  # (N, 2N): row i = U[i, :] then U[:, i]
    drop_row = torch.zeros_like(eye) if exclude is None else exclude.to(U.device).bool() & ~eye
    drop_col = drop_row.t().clone()
    if diagonal_once:
        drop_col = drop_col | eye
    logits = logits.masked_fill(torch.cat([drop_row, drop_col], dim=1), float("-inf"))
    return (torch.logsumexp(logits, dim=1) - U.diagonal()).mean()
