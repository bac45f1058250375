"""Pooling over time: attention pooling, masked max, multi-scale clip proposals (§2, §4.2)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

#: ref: ms-sl method/model.py ``mask_logits``.
MASK_LOGIT_VALUE = -1e10


def mask_logits(target: Tensor, mask: Tensor) -> Tensor:
    """s·m + (1 − m)·(−1e10): pushes padded logits to −1e10 (mask 1 = valid).

    Shapes: target and mask broadcastable -> broadcast shape.
    """
    mask = mask.to(target.dtype)
    return target * mask + (1.0 - mask) * MASK_LOGIT_VALUE


def masked_max(scores: Tensor, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Max of ``scores`` over ``dim`` among positions where ``mask`` is nonzero.

    Returns (values, indices) as ``torch.max`` does; a slice with no valid position gives −inf
    and index 0.

    Shapes: scores and mask broadcastable; dim reduced.
    """
    filled = scores.masked_fill(mask == 0, float("-inf"))
    return filled.max(dim=dim)


class AttentionPooling(nn.Module):
    """Reference "modular vector mapping": a_t = softmax_t(mask_logits(wᵀh_t)), q̄ = Σ_t a_t h_t.

    w ∈ R^D has no bias. The batch dimension is always kept (the reference's ``.squeeze()``
    crashes on a one-query batch; §4.6 item 8, fixed).

    Shapes: states (N, L, D), mask (N, L) -> (N, D).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        logits = mask_logits(self.score(states).squeeze(-1), mask)  # (N, L)
        weights = logits.softmax(dim=1)  # (N, L)
        return torch.einsum("nl,nld->nd", weights, states)  # (N, D)


def proposal_windows(num_clips: int, device=None) -> tuple[Tensor, Tensor]:
    """Start index and length of every sliding window, in the reference order: all windows of
    length 1, then of length 2, ..., then the single window of length ``num_clips``; within
    one length by increasing start. There are num_clips·(num_clips+1)/2 of them (528 for 32).

    Shapes: -> starts (P,), lengths (P,) int64.
    """
    lengths = torch.cat([torch.full((num_clips - k + 1,), k, dtype=torch.long)
                         for k in range(1, num_clips + 1)])
    starts = torch.cat([torch.arange(num_clips - k + 1) for k in range(1, num_clips + 1)])
    return starts.to(device), lengths.to(device)


def window_average_matrix(num_clips: int, dtype=torch.float32, device=None) -> Tensor:
    """A with A[j, t] = 1/k_j for t in window j, else 0, so that A·x lists every sliding
    average of x in the order of :func:`proposal_windows`.

    Because the averages are linear, (q·C) Aᵀ gives exactly the proposal scores q·P_j: MS-SL
    scores 528 proposals for the cost of 32 dot products and one small matrix product.

    Shapes: -> (P, N) with P = N(N+1)/2.
    """
    starts, lengths = proposal_windows(num_clips)
    t = torch.arange(num_clips)
    inside = (t[None, :] >= starts[:, None]) & (t[None, :] < (starts + lengths)[:, None])  # (P, N)
    return (inside.double() / lengths[:, None].double()).to(device=device, dtype=dtype)


def multi_scale_proposals(clips: Tensor) -> Tensor:
    """p_{k,s} = (1/k) Σ_{t=s}^{s+k-1} C_t for k = 1..N, s = 0..N-k (§4.2), ordered as the
    reference's concatenation of Identity and AvgPool1d(k, stride 1), k = 2..N.

    Computed from one cumulative sum (in float64, then cast back) instead of N pooling calls.

    Shapes: clips (B, N, D) -> (B, N(N+1)/2, D); (B, 32, D) -> (B, 528, D).
    """
    num_clips = clips.shape[1]
    starts, lengths = proposal_windows(num_clips, clips.device)
    csum = torch.cumsum(clips.double(), dim=1)  # (B, N, D)
    csum = torch.cat([csum.new_zeros(clips.shape[0], 1, clips.shape[2]), csum], dim=1)  # (B, N+1, D)
    sums = csum[:, starts + lengths] - csum[:, starts]  # (B, P, D)
    return (sums / lengths[None, :, None].double()).to(clips.dtype)
