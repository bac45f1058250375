"""Shared losses (docs/methods.md §3.1–§3.4): hand-computed tiny matrices and loop oracles."""
from __future__ import annotations

import math

import pytest
import torch

from methods.losses.nce import clip_nce, frame_nce
from methods.losses.ranking import clip_triplet_loss, frame_triplet_loss


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# ---------------------------------------------------------------- loop oracles (reference semantics)

def clip_triplet_oracle(S, labels, margin, t2v_ranks, v2t_ranks):
    """get_clip_triplet_loss with the sampled ranks given explicitly (t2v ranks count the
    positive at rank 0; v2t ranks index the sorted negatives)."""
    nq, nv = S.shape
    t2v = 0.0
    for i in range(nq):
        row = S[i].clone()
        row[labels[i]] = 999
        order = sorted(range(nv), key=lambda j: -float(row[j]))
        t2v += max(0.0, margin + float(S[i, order[t2v_ranks[i]]]) - float(S[i, labels[i]]))
    v2t = 0.0
    for v in range(nv):
        pos = [float(S[i, v]) for i in range(nq) if labels[i] == v]
        neg = sorted((float(S[i, v]) for i in range(nq) if labels[i] != v), reverse=True)
        if pos and neg:
            v2t += max(0.0, margin + neg[v2t_ranks[v]] - sum(pos) / len(pos))
    return t2v / nq + v2t / nv


def frame_nce_oracle(U, once=False, exclude=None):
    n = U.shape[0]
    total = 0.0
    for i in range(n):
        logits = [float(U[i, j]) for j in range(n) if exclude is None or i == j or not exclude[i, j]]
        logits += [float(U[j, i]) for j in range(n)
                   if not (once and j == i) and (exclude is None or i == j or not exclude[j, i])]
        total += lse(*logits) - float(U[i, i])
    return total / n


# ---------------------------------------------------------------- clip triplet

S3 = torch.tensor([[0.5, 0.6], [0.4, 0.3], [0.7, 0.65]])
Y3 = torch.tensor([0, 1, 1])


def test_clip_triplet_hand_computed_hard_top1():
    # B = 2: the t2v rank is always 1. t2v hinges .3, .3, .25; v2t top-1: video 0 neg .7 vs .5
    # -> .4; video 1 neg .6 vs mean(.3, .65) = .475 -> .325.
    loss = clip_triplet_loss(S3, Y3, margin=0.2, hard=True)
    assert loss.item() == pytest.approx(0.85 / 3 + (0.4 + 0.325) / 2, abs=1e-6)


def test_clip_triplet_non_hard_v2t_is_random_over_all_negatives():
    # video 0 has two negatives (.4 -> hinge .1, .7 -> .4); video 1 one (.325)
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = clip_triplet_loss(S3, Y3, margin=0.2, hard=False, generator=g).item()
        seen.add(round(loss - 0.85 / 3, 5))
    assert seen == {round((0.1 + 0.325) / 2, 5), round((0.4 + 0.325) / 2, 5)}


def test_clip_triplet_hard_pool_restricts_t2v_negatives():
    # one query, positive 0; margin 10 keeps the hinge active so neg = loss - v2t - margin + pos
    S = torch.tensor([[0.0, 0.9, 0.8, 0.1, 0.2, 0.3]])
    y = torch.tensor([0])
    g = torch.Generator().manual_seed(1)
    hard_negs, soft_negs = set(), set()
    for _ in range(60):
        # with Nq = 1 the v2t side has no negative for video 0 and no positive elsewhere: 0
        hard_negs.add(round(clip_triplet_loss(S, y, margin=10.0, hard=True, hard_pool=2,
                                              generator=g).item() - 10.0, 5))
        soft_negs.add(round(clip_triplet_loss(S, y, margin=10.0, hard=False,
                                              generator=g).item() - 10.0, 5))
    assert hard_negs == {0.9, 0.8}
    assert soft_negs == {0.9, 0.8, 0.1, 0.2, 0.3}


def test_clip_triplet_seeded_matches_loop_oracle():
    torch.manual_seed(3)
    S = torch.rand(7, 5) * 2 - 1
    y = torch.tensor([0, 0, 1, 2, 3, 3, 4])
    for hard, v2t_hard, H in [(False, "top1", 20), (True, "top1", 2), (True, "pool", 2)]:
        g = torch.Generator().manual_seed(11)
        loss = clip_triplet_loss(S, y, margin=0.3, hard=hard, hard_pool=H, v2t_hard=v2t_hard,
                                 generator=g)
        # replay the draws in the documented order: t2v randint, then v2t uniform
        g = torch.Generator().manual_seed(11)
        J = min(1 + H, 5) if hard else 5
        t2v_ranks = torch.randint(1, J, (7,), generator=g).tolist()
        n_neg = torch.tensor([7 - int((y == v).sum()) for v in range(5)])
        if hard and v2t_hard == "top1":
            v2t_ranks = [0] * 5
        else:
            pool = n_neg.clamp(max=H) if hard else n_neg
            v2t_ranks = (torch.rand(5, generator=g) * pool).floor().long().tolist()
        expected = clip_triplet_oracle(S, y.tolist(), 0.3, t2v_ranks, v2t_ranks)
        assert loss.item() == pytest.approx(expected, abs=1e-6), (hard, v2t_hard)


def test_clip_triplet_gradient_flows_to_sampled_entries_only():
    S = S3.clone().requires_grad_(True)
    clip_triplet_loss(S, Y3, margin=0.2, hard=True).backward()
    # t2v: each row's pos -1/3, neg +1/3; v2t: video 0 pos (0,0) -1/2, neg (2,0) +1/2;
    # video 1 pos mean over (1,1),(2,1) -1/4 each, neg (0,1) +1/2
    expected = torch.tensor([[-1 / 3 - 1 / 2, 1 / 3 + 1 / 2],
                             [1 / 3, -1 / 3 - 1 / 4],
                             [1 / 3 + 1 / 2, -1 / 3 - 1 / 4]])
    torch.testing.assert_close(S.grad, expected)


def test_clip_triplet_rejects_unknown_v2t_mode():
    with pytest.raises(ValueError, match="v2t_hard"):
        clip_triplet_loss(S3, Y3, margin=0.2, hard=True, v2t_hard="all")


# ---------------------------------------------------------------- frame triplet

def test_frame_triplet_hand_computed_n2():
    S = torch.tensor([[0.5, 0.6], [0.4, 0.3]])
    # rows: .2+.6-.5 = .3, .2+.4-.3 = .3; columns: .2+.4-.5 = .1, .2+.6-.3 = .5
    for hard in (False, True):
        assert frame_triplet_loss(S, margin=0.2, hard=hard).item() == pytest.approx(0.6, abs=1e-6)


def test_frame_triplet_hard_pool1_takes_hardest_and_exclude_skips_false_negatives():
    S = torch.tensor([[0.5, 0.9, 0.1],
                      [0.8, 0.5, 0.2],
                      [0.0, 0.3, 0.5]])
    # hard, pool 1: row hardest negs .9, .8, .3; column hardest negs .8, .9, .2
    rows = (0.2 + 0.9 - 0.5) + (0.2 + 0.8 - 0.5) + 0.0
    cols = (0.2 + 0.8 - 0.5) + (0.2 + 0.9 - 0.5) + 0.0
    loss = frame_triplet_loss(S, margin=0.2, hard=True, hard_pool=1)
    assert loss.item() == pytest.approx((rows + cols) / 3, abs=1e-6)
    # queries 0 and 1 share a video: (0,1) and (1,0) are excluded
    exclude = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    rows = max(0, 0.2 + 0.1 - 0.5) + max(0, 0.2 + 0.2 - 0.5) + max(0, 0.2 + 0.3 - 0.5)
    cols = max(0, 0.2 + 0.0 - 0.5) + max(0, 0.2 + 0.3 - 0.5) + max(0, 0.2 + 0.2 - 0.5)
    masked = frame_triplet_loss(S, margin=0.2, hard=True, hard_pool=1, exclude=exclude)
    assert masked.item() == pytest.approx((rows + cols) / 3, abs=1e-6)
    masked = frame_triplet_loss(S, margin=0.5, hard=True, hard_pool=1, exclude=exclude)
    rows = (0.5 + 0.1 - 0.5) + (0.5 + 0.2 - 0.5) + (0.5 + 0.3 - 0.5)
    cols = (0.5 + 0.0 - 0.5) + (0.5 + 0.3 - 0.5) + (0.5 + 0.2 - 0.5)
    assert masked.item() == pytest.approx((rows + cols) / 3, abs=1e-6)


def test_frame_triplet_row_without_negatives_adds_zero():
    S = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    exclude = torch.ones(2, 2, dtype=torch.bool)
    assert frame_triplet_loss(S, margin=0.2, hard=False, exclude=exclude).item() == 0.0


def test_frame_triplet_seeded_uses_reference_draws():
    torch.manual_seed(5)
    S = torch.rand(6, 6)
    g = torch.Generator().manual_seed(2)
    loss = frame_triplet_loss(S, margin=0.4, hard=True, hard_pool=3, generator=g)
    g = torch.Generator().manual_seed(2)
    row_ranks = torch.randint(1, 4, (6,), generator=g)
    col_ranks = torch.randint(1, 4, (6,), generator=g)
    total = 0.0
    for M, ranks in ((S, row_ranks), (S.t(), col_ranks)):
        for i in range(6):
            negs = sorted((float(M[i, j]) for j in range(6) if j != i), reverse=True)
            total += max(0.0, 0.4 + negs[int(ranks[i]) - 1] - float(M[i, i]))
    assert loss.item() == pytest.approx(total / 6, abs=1e-6)


# ---------------------------------------------------------------- NCE

def test_clip_nce_hand_computed():
    U = torch.tensor([[1.0, 0.0], [2.0, 3.0], [0.5, 1.5]])
    y = torch.tensor([0, 1, 1])
    t2v = ((lse(1, 0) - 1) + (lse(2, 3) - 3) + (lse(0.5, 1.5) - 1.5)) / 3
    v2t = ((lse(1, 2, 0.5) - 1) + (lse(0, 3, 1.5) - lse(3, 1.5))) / 2
    assert clip_nce(U, y).item() == pytest.approx(t2v + v2t, abs=1e-6)


def test_clip_nce_video_without_query_adds_zero_but_counts_in_b():
    U = torch.tensor([[1.0, 0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0])
    loss = clip_nce(U, y)
    expected = (lse(1, 0, 2) - 1) + (1 - 1) / 3  # video 0: LSE over one query minus itself = 0
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.isfinite(U.grad).all()


def test_frame_nce_double_count_and_fix():
    U = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    twice = ((lse(1, 0, 1, 2) - 1) + (lse(2, 3, 0, 3) - 3)) / 2
    once = ((lse(1, 0, 2) - 1) + (lse(2, 3, 0) - 3)) / 2
    assert frame_nce(U).item() == pytest.approx(twice, abs=1e-6)
    assert frame_nce(U, diagonal_once=True).item() == pytest.approx(once, abs=1e-6)
    assert frame_nce(U).item() > frame_nce(U, diagonal_once=True).item()


def test_frame_nce_matches_reference_formula_and_oracle():
    torch.manual_seed(0)
    U = torch.randn(5, 5)
    # the reference: x (N, N, 1), cat((x, x.permute(1,0,2)), dim=1).view(N, -1)
    x = U.view(5, 5, 1)
    den = torch.logsumexp(torch.cat((x, x.permute(1, 0, 2)), dim=1).view(5, -1), dim=1)
    torch.testing.assert_close(frame_nce(U), (den - U.diagonal()).mean())
    exclude = torch.zeros(5, 5, dtype=torch.bool)
    exclude[0, 1] = exclude[1, 0] = exclude[3, 4] = True
    for once in (False, True):
        assert frame_nce(U, diagonal_once=once, exclude=exclude).item() == pytest.approx(
            frame_nce_oracle(U, once, exclude), abs=1e-5)
        assert frame_nce(U, diagonal_once=once).item() == pytest.approx(
            frame_nce_oracle(U, once), abs=1e-5)
