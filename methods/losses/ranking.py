"""Triplet ranking losses with random / hard negative sampling (docs/methods.md §3.1, §3.2).

Negatives are chosen on detached copies (sorting and sampling carry no gradient); the loss then
reads the chosen entries from the original matrix so gradients flow through the sampled
scores. All sampling is vectorised: one random draw per side covers every row.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from benchmark.precision import float32_loss

#: ref: ms-sl method/model.py: the positive is masked to 999 (above any cosine) before sorting.
POSITIVE_SENTINEL = 999.0


def _device_of(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _randint(low: int, high: int, n: int, generator, device) -> Tensor:
    draw = torch.randint(low, high, (n,), generator=generator, device=_device_of(generator, device))
    return draw.to(device)


def _uniform_rank(count: Tensor, generator, device) -> Tensor:
    """floor(u·count) with u ~ U[0, 1) per row: a uniform rank in [0, count) (count ≥ 1)."""
    u = torch.rand(count.shape, generator=generator, device=_device_of(generator, device)).to(device)
    rank = (u * count.to(u.dtype)).floor().long()
    return torch.minimum(rank, (count - 1).clamp(min=0))


def _hinge(margin: float, neg: Tensor, pos: Tensor) -> Tensor:
    return (margin + neg - pos).clamp(min=0)


@float32_loss
def clip_triplet_loss(S: Tensor, query_video: Tensor, *, margin: float, hard: bool,
                      hard_pool: int = 20, v2t_hard: Literal["top1", "pool"] = "top1",
                      generator: torch.Generator | None = None) -> Tensor:
    """Clip-style triplet loss ``get_clip_triplet_loss`` (§3.1): ℓ = ℓ_t2v + ℓ_v2t.

    t2v: for query i the row is sorted descending with its positive y(i) first; a rank j is
    drawn uniformly in [1, J), J = min(1+H, B) when ``hard`` else B, and n_i is the video at
    rank j:  ℓ_t2v = (1/N_q) Σ_i [m + S_{i,n_i} − S_{i,y(i)}]_+.

    v2t: for video v, s̄_v = mean_{i: y(i)=v} S_{iv}; the negatives are the queries of other
    videos sorted descending; the chosen one k_v is a uniform random negative, or when ``hard``
    the top-1 (``v2t_hard="top1"``, reference) or a uniform one of the top H (``"pool"``, fix):
    ℓ_v2t = (1/B) Σ_v [m + S_{k_v,v} − s̄_v]_+. Videos with no query or no negative add 0.

    Shapes: S (Nq, B) cosine scores; query_video (Nq,) int64 in [0, B) -> scalar.
    """
    if v2t_hard not in ("top1", "pool"):
        raise ValueError(f"clip_triplet_loss: v2t_hard must be 'top1' or 'pool', got {v2t_hard!r}")
    num_queries, num_videos = S.shape
    device = S.device
    rows = torch.arange(num_queries, device=device)
    query_video = query_video.to(device)

    # t2v
    pos = S[rows, query_video]  # (Nq,)
    masked = S.detach().clone()
    masked[rows, query_video] = POSITIVE_SENTINEL
    order = masked.argsort(dim=1, descending=True)  # (Nq, B)
    limit = min(1 + hard_pool, num_videos) if hard else num_videos
    if limit > 1:
        rank = _randint(1, limit, num_queries, generator, device)  # (Nq,)
        t2v = _hinge(margin, S[rows, order[rows, rank]], pos).sum() / num_queries
    else:  # a single video: no negative exists
        t2v = S.sum() * 0.0

    # v2t
    St = S.t()  # (B, Nq)
    own = query_video[None, :] == torch.arange(num_videos, device=device)[:, None]  # (B, Nq)
    n_pos = own.sum(dim=1)  # (B,)
    n_neg = num_queries - n_pos
    pos_mean = (St * own).sum(dim=1) / n_pos.clamp(min=1)  # (B,)
    neg_sorted = St.detach().masked_fill(own, float("-inf")).argsort(dim=1, descending=True)  # (B, Nq)
    if hard and v2t_hard == "top1":
        neg_rank = torch.zeros(num_videos, dtype=torch.long, device=device)
    else:
        pool = torch.clamp(n_neg, max=hard_pool) if hard else n_neg
        neg_rank = _uniform_rank(pool.clamp(min=1), generator, device)  # (B,)
    vids = torch.arange(num_videos, device=device)
    neg = St[vids, neg_sorted[vids, neg_rank]]  # (B,)
    valid = (n_pos > 0) & (n_neg > 0)
    v2t = (_hinge(margin, neg, pos_mean) * valid).sum() / num_videos
    return t2v + v2t


def _frame_side(S: Tensor, exclude: Tensor | None, *, margin: float, hard: bool, hard_pool: int,
                generator) -> Tensor:
    """One direction of §3.2: rows of S are anchors, the diagonal the positives."""
    n = S.shape[0]
    device = S.device
    rows = torch.arange(n, device=device)
    masked = S.detach().clone()
    masked[rows, rows] = POSITIVE_SENTINEL
    if exclude is None:
        limit = min(1 + hard_pool, n) if hard else n
        if limit <= 1:
            return S.sum() * 0.0
        rank = _randint(1, limit, n, generator, device)  # (N,)
        valid = torch.ones(n, dtype=torch.bool, device=device)
    else:
        masked = masked.masked_fill(exclude, float("-inf"))
        n_neg = (n - 1) - exclude.sum(dim=1)  # (N,)
        pool = torch.clamp(n_neg, max=hard_pool) if hard else n_neg
        rank = 1 + _uniform_rank(pool.clamp(min=1), generator, device)  # (N,)
        valid = n_neg > 0
    order = masked.argsort(dim=1, descending=True)  # (N, N)
    neg = S[rows, order[rows, rank]]  # (N,)
    return (_hinge(margin, neg, S.diagonal()) * valid).sum() / n


@float32_loss
def frame_triplet_loss(S: Tensor, *, margin: float, hard: bool, hard_pool: int = 20,
                       exclude: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """Frame-style triplet loss ``get_frame_trip_loss`` (§3.2), positives on the diagonal.

    Each row (then each column) is sorted descending with the diagonal first, a rank is drawn
    uniformly from [1, J), J = min(1+H, N) when ``hard`` else N:
    ℓ = (1/N) Σ_i [m + S_{i,n_i} − S_ii]_+ + (1/N) Σ_i [m + S_{n'_i,i} − S_ii]_+.

    ``exclude[i, j]`` (the fix for same-video false negatives, §4.6 item 3) removes entry (i, j)
    from the negatives of row i and of column j; a row left without negatives adds 0. Without
    ``exclude`` the draws are exactly the reference's ``randint(1, J, (N,))``, rows then columns.

    Shapes: S (N, N); exclude (N, N) bool or None (its diagonal is ignored) -> scalar.
    """
    n = S.shape[0]
    if exclude is not None:
        exclude = exclude.to(S.device).bool() & ~torch.eye(n, dtype=torch.bool, device=S.device)
    rows = _frame_side(S, exclude, margin=margin, hard=hard, hard_pool=hard_pool, generator=generator)
    cols = _frame_side(S.t(), None if exclude is None else exclude.t(), margin=margin, hard=hard,
                       hard_pool=hard_pool, generator=generator)
    return rows + cols
