"""Soft-target NCE (docs/methods.md §6.4): hand-computed case, empty-part rules, oracle, grads."""
from __future__ import annotations

import math

import pytest
import torch

from methods.losses.nce import clip_nce
from methods.losses.soft_nce import soft_target_nce


def lse(xs):
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def oracle(U, T, qv, alpha, beta, v2t="log_weighted_sum", hard_q=None, hard_v=None):
    """Plain loops restating §6.4 (position partition unless hard sets are given)."""
    U, T, qv = U.tolist(), T.tolist(), qv.tolist()
    n, m = len(U), len(U[0])
    hq, hv = math.floor(alpha * n), math.floor(alpha * m)
    hard_q = set(range(hq)) if hard_q is None else set(hard_q)
    hard_v = set(range(hv)) if hard_v is None else set(hard_v)
    y = [[1.0 if qv[i] == v else 0.0 for v in range(m)] for i in range(n)]
    t2v = {}
    for i in range(n):
        z = lse(T[i])
        p = [math.exp(T[i][v] - z) for v in range(m)]
        tgt = y[i] if i in hard_q else [beta * y[i][v] + (1 - beta) * p[v] for v in range(m)]
        t2v[i] = sum(tgt[v] * (lse(U[i]) - U[i][v]) for v in range(m))
    v2t_terms = {}
    for v in range(m):
        col_t = [T[i][v] for i in range(n)]
        col_u = [U[i][v] for i in range(n)]
        z = lse(col_t)
        p = [math.exp(x - z) for x in col_t]
        tgt = [y[i][v] for i in range(n)] if v in hard_v else \
            [beta * y[i][v] + (1 - beta) * p[i] for i in range(n)]
        if v2t == "log_weighted_sum":
            v2t_terms[v] = lse(col_u) - lse([math.log(tgt[i] + 1e-12) + col_u[i] for i in range(n)])
        else:
            v2t_terms[v] = sum(tgt[i] * (lse(col_u) - col_u[i]) for i in range(n))
    loss = 0.0
    if hq > 0 and hv > 0:
        loss += alpha * (sum(t2v[i] for i in hard_q) / hq + sum(v2t_terms[v] for v in hard_v) / hv)
    if n - hq > 0 and m - hv > 0:
        loss += (1 - alpha) * (sum(t2v[i] for i in range(n) if i not in hard_q) / (n - hq)
                               + sum(v2t_terms[v] for v in range(m) if v not in hard_v) / (m - hv))
    return loss


def clip_nce_formula(U, qv):
    """§3.3 written out."""
    n, m = U.shape
    own = qv[:, None] == torch.arange(m)
    t2v = (U.logsumexp(1) - U[torch.arange(n), qv]).mean()
    v2t = (U.logsumexp(0) - U.masked_fill(~own, float("-inf")).logsumexp(0)).mean()
    return t2v + v2t


def test_hand_computed_two_by_two():
    # N = M = 2, α = .5 -> query 0 and video 0 hard, query 1 and video 1 soft.
    U = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    T = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    qv = torch.tensor([0, 1])
    beta = 0.5
    # t2v: row 0 hard: LSE(1,0) − 1; row 1 soft: softmax(T_1) = (.75, .25); Ŷ = (.375, .625)
    lse0, lse1 = math.log(math.e + 1), math.log(1 + math.e ** 2)
    t2v_hard = lse0 - 1.0
    t2v_soft = 0.375 * (lse1 - 0.0) + 0.625 * (lse1 - 2.0)
    # v2t: video 0 hard: column (1, 0), Ẑ = (1, 0)
    v2t_hard = math.log(math.e + 1) - lse([math.log(1 + 1e-12) + 1.0, math.log(1e-12) + 0.0])
    # video 1 soft: column T_·1 = (ln 3, 0) -> P = (.75, .25); Ẑ = (.375, .625); column U = (0, 2)
    v2t_soft = math.log(1 + math.e ** 2) - lse([math.log(0.375 + 1e-12), math.log(0.625 + 1e-12) + 2.0])
    expected = 0.5 * (t2v_hard + v2t_hard) + 0.5 * (t2v_soft + v2t_soft)
    got = soft_target_nce(U, T, qv, alpha=0.5, beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("v2t", ["log_weighted_sum", "cross_entropy"])
def test_matches_loop_oracle(v2t):
    g = torch.Generator().manual_seed(3)
    for alpha, beta in [(0.8, 0.8), (0.37, 0.5), (0.0, 0.6), (1.0, 0.5), (0.55, 0.9)]:
        counts = torch.randint(1, 4, (6,), generator=g)
        qv = torch.repeat_interleave(torch.arange(6), counts)
        U = torch.randn(len(qv), 6, generator=g) * 3
        T = torch.randn(len(qv), 6, generator=g) * 5
        got = soft_target_nce(U, T, qv, alpha=alpha, beta=beta, v2t=v2t)
        assert got.item() == pytest.approx(oracle(U, T, qv, alpha, beta, v2t), rel=1e-5, abs=1e-6)


def test_alpha_one_reduces_to_clip_nce():
    g = torch.Generator().manual_seed(4)
    qv = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    U = torch.randn(7, 4, generator=g)
    T = torch.randn(7, 4, generator=g)        # irrelevant: every row is hard
    got = soft_target_nce(U, T, qv, alpha=1.0, beta=0.3)
    assert got.item() == pytest.approx(clip_nce_formula(U, qv).item(), abs=1e-6)
    assert got.item() == pytest.approx(clip_nce(U, qv).item(), abs=1e-6)


def test_empty_hard_part_when_no_hard_video():
    # N = 10, M = 3, α = .3 -> h_Q = 3 but h_V = 0: the hard bracket is dropped; soft keeps (1 − α)
    g = torch.Generator().manual_seed(5)
    qv = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    U = torch.randn(10, 3, generator=g)
    T = torch.randn(10, 3, generator=g)
    got = soft_target_nce(U, T, qv, alpha=0.3, beta=0.5)
    assert got.item() == pytest.approx(oracle(U, T, qv, 0.3, 0.5), rel=1e-6)
    # …which is (1 − α)·[t2v over rows 3..9 / 7 + v2t over all three videos / 3]
    lse_rows = U.logsumexp(1, keepdim=True)
    y = torch.nn.functional.one_hot(qv, 3).float()
    y_hat = 0.5 * y + 0.5 * torch.softmax(T, 1)
    t2v = (y_hat * (lse_rows - U)).sum(1)[3:].sum() / 7
    z_hat = 0.5 * y + 0.5 * torch.softmax(T, 0)
    v2t = (U.logsumexp(0) - (torch.log(z_hat + 1e-12) + U).logsumexp(0)).sum() / 3
    assert got.item() == pytest.approx(0.7 * (t2v + v2t).item(), rel=1e-6)


def test_alpha_zero_is_all_soft_and_beta_one_gives_clip_nce():
    g = torch.Generator().manual_seed(6)
    qv = torch.tensor([0, 1, 1, 2])
    U = torch.randn(4, 3, generator=g)
    T = torch.randn(4, 3, generator=g)
    # α = 0: hard bracket dropped, weight (1 − 0) on the soft one; β = 1 makes soft = hard targets
    got = soft_target_nce(U, T, qv, alpha=0.0, beta=1.0)
    assert got.item() == pytest.approx(clip_nce_formula(U, qv).item(), abs=1e-6)


def test_alpha_one_drops_soft_part():
    qv = torch.tensor([0, 1])
    U = torch.tensor([[0.5, 0.1], [0.2, 0.3]])
    a = soft_target_nce(U, torch.zeros(2, 2), qv, alpha=1.0, beta=0.5)
    b = soft_target_nce(U, torch.randn(2, 2) * 10, qv, alpha=1.0, beta=0.5)
    assert a.item() == b.item()          # T never enters when there is no soft row


def test_random_partition_uses_generator():
    g = torch.Generator().manual_seed(7)
    qv = torch.arange(8)
    U = torch.randn(8, 8, generator=g)
    T = torch.randn(8, 8, generator=g)
    a = soft_target_nce(U, T, qv, alpha=0.5, beta=0.5, partition="random",
                        generator=torch.Generator().manual_seed(1))
    b = soft_target_nce(U, T, qv, alpha=0.5, beta=0.5, partition="random",
                        generator=torch.Generator().manual_seed(1))
    assert a.item() == b.item()
    perm_gen = torch.Generator().manual_seed(1)
    rows = torch.randperm(8, generator=perm_gen)[:4].tolist()
    cols = torch.randperm(8, generator=perm_gen)[:4].tolist()
    assert a.item() == pytest.approx(oracle(U, T, qv, 0.5, 0.5, hard_q=rows, hard_v=cols), rel=1e-6)
    pos = soft_target_nce(U, T, qv, alpha=0.5, beta=0.5)
    assert a.item() != pytest.approx(pos.item())


def test_gradient_through_self_targets_and_detach():
    g = torch.Generator().manual_seed(8)
    qv = torch.tensor([0, 0, 1, 2])
    base = torch.randn(4, 3, generator=g)
    U = base.clone().requires_grad_(True)
    soft_target_nce(U, U, qv, alpha=0.25, beta=0.5).backward()       # T is U itself
    grad_through = U.grad.clone()
    U2 = base.clone().requires_grad_(True)
    soft_target_nce(U2, U2.detach(), qv, alpha=0.25, beta=0.5).backward()
    assert not torch.allclose(grad_through, U2.grad)
    # the difference is exactly the gradient through T
    T = base.clone().requires_grad_(True)
    soft_target_nce(base, T, qv, alpha=0.25, beta=0.5).backward()
    assert T.grad.abs().sum() > 0
    assert torch.allclose(grad_through, U2.grad + T.grad, atol=1e-6)


def test_bad_arguments():
    U = torch.zeros(2, 2)
    qv = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="partition"):
        soft_target_nce(U, U, qv, alpha=0.5, beta=0.5, partition="difficulty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="v2t"):
        soft_target_nce(U, U, qv, alpha=0.5, beta=0.5, v2t="mil")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        soft_target_nce(U, torch.zeros(2, 3), qv, alpha=0.5, beta=0.5)
