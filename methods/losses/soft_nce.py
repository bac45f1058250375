"""DL-DKD++ soft-target NCE ``clip_nce_soft`` (docs/methods.md §6.4), vectorised.

With N = N_q queries, M = B videos, Y the (N, M) ground truth, h_Q = ⌊αN⌋ and h_V = ⌊αM⌋:

1. partition: query rows i < h_Q and videos v < h_V are "hard", the rest "soft" (batch
   position, ``partition="position"``; ``"random"`` draws the hard sets uniformly instead);
2. teacher distributions at temperature 1 on the raw scores: P^{t2v} = softmax_v(T_i·),
   P^{v2t} = softmax_i(T_·v);
3. targets Ŷ_i· = Y_i· (hard rows) or βY_i· + (1−β)P^{t2v}_i· (soft rows); Ẑ_v· likewise
   from Y_·v and P^{v2t}_·v;
4. t2v (soft cross-entropy): ℓ^{t2v}(R) = Σ_{i∈R} Σ_v Ŷ_iv (LSE_v' U_iv' − U_iv);
5. v2t (log of a target-weighted sum, ``v2t="log_weighted_sum"``):
   ℓ^{v2t}(C) = Σ_{v∈C} [LSE_i U_iv − LSE_i(log(Ẑ_vi + 1e−12) + U_iv)];
   ``v2t="cross_entropy"`` uses Σ_i Ẑ_vi (LSE_i' U_i'v − U_iv) instead (the symmetric fix);
6. L = α[ℓ^{t2v}_hard/h_Q + ℓ^{v2t}_hard/h_V] + (1−α)[ℓ^{t2v}_soft/(N−h_Q) + ℓ^{v2t}_soft/(M−h_V)],
   the hard bracket only when h_Q > 0 and h_V > 0, the soft one only when N−h_Q > 0 and M−h_V > 0.

Gradients flow through ``T`` when it requires grad (the reference's undetached exploration
self-targets, §6.4.7); detach it before the call to stop them.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from benchmark.precision import float32_loss

# ref: clip_nce_soft adds 1e-12 inside the log of the target weights (docs/methods.md §6.4.5)
_LOG_EPS = 1e-12


def _hard_flags(n: int, count: int, partition: str, generator: torch.Generator | None,
                device: torch.device) -> Tensor:
    """(n,) bool: which of n items are in the hard part."""
    if partition == "position":
        return torch.arange(n, device=device) < count
    if partition == "random":
        order = torch.randperm(n, generator=generator, device="cpu").to(device)
        return torch.zeros(n, dtype=torch.bool, device=device).index_fill_(0, order[:count], True)
    raise ValueError(f"soft_target_nce: partition must be 'position' or 'random', got {partition!r}")


@float32_loss
def soft_target_nce(U: Tensor, T: Tensor, query_video: Tensor, *, alpha: float, beta: float,
                    partition: Literal["position", "random"] = "position",
                    v2t: Literal["log_weighted_sum", "cross_entropy"] = "log_weighted_sum",
                    generator: torch.Generator | None = None) -> Tensor:
    """Soft-target NCE of docs/methods.md §6.4 (see the module docstring for the formula).

    Shapes: U (Nq, B) unnormalised student scores; T (Nq, B) raw target scores (teacher U^T,
    or the student's own U); query_video (Nq,) int64 batch index of each query's video.
    Returns a scalar (0 when both brackets are dropped).
    """
    if v2t not in ("log_weighted_sum", "cross_entropy"):
        raise ValueError(f"soft_target_nce: v2t must be 'log_weighted_sum' or 'cross_entropy', "
                         f"got {v2t!r}")
    if U.shape != T.shape:
        raise ValueError(f"soft_target_nce: U {tuple(U.shape)} and T {tuple(T.shape)} differ")
    n, m = U.shape
    h_q, h_v = math.floor(alpha * n), math.floor(alpha * m)      # ref: int(alpha * N)
    hard_q = _hard_flags(n, h_q, partition, generator, U.device)              # (Nq,)
    hard_v = _hard_flags(m, h_v, partition, generator, U.device)              # (B,)

    Y = (query_video[:, None] == torch.arange(m, device=U.device)).to(U.dtype)  # (Nq, B)
    p_t2v = torch.softmax(T, dim=1)                                             # (Nq, B)
    p_v2t = torch.softmax(T, dim=0)                                             # (Nq, B)
    y_hat = torch.where(hard_q[:, None], Y, beta * Y + (1 - beta) * p_t2v).clamp(min=0)  # (Nq, B)
    # column v of ẑ is Ẑ_v·
    z_hat = torch.where(hard_v[None, :], Y, beta * Y + (1 - beta) * p_v2t).clamp(min=0)  # (Nq, B)

    t2v_rows = (y_hat * (U.logsumexp(dim=1, keepdim=True) - U)).sum(dim=1)       # (Nq,)
    if v2t == "log_weighted_sum":
        v2t_cols = U.logsumexp(dim=0) - (torch.log(z_hat + _LOG_EPS) + U).logsumexp(dim=0)  # (B,)
    else:
        v2t_cols = (z_hat * (U.logsumexp(dim=0, keepdim=True) - U)).sum(dim=0)  # (B,)

    loss = U.new_zeros(())
    if h_q > 0 and h_v > 0:
        loss = loss + alpha * (t2v_rows[hard_q].sum() / h_q + v2t_cols[hard_v].sum() / h_v)
    if n - h_q > 0 and m - h_v > 0:
        loss = loss + (1 - alpha) * (t2v_rows[~hard_q].sum() / (n - h_q)
                                     + v2t_cols[~hard_v].sum() / (m - h_v))
    return loss
