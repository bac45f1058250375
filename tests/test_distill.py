"""Frame KD loss (docs/methods.md §5.3) on hand-computed cases and a loop oracle."""
from __future__ import annotations

import math

import pytest
import torch

from methods.losses.distill import frame_kd_loss


def kl_oracle(student, teacher, mask, tau, reduction):
    total = []
    for s_row, t_row, m_row in zip(student.tolist(), teacher.tolist(), mask.tolist()):
        idx = [t for t, m in enumerate(m_row) if m > 0]
        zs = [math.exp(s_row[t] / tau) for t in idx]
        zt = [math.exp(t_row[t] / tau) for t in idx]
        q = [z / sum(zs) for z in zs]
        p = [z / sum(zt) for z in zt]
        total.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    return sum(total) if reduction == "sum" else sum(total) / len(total)


def test_hand_computed_two_frames():
    # τ = 0.5; student logits (0, 0) -> q = (.5, .5); teacher (ln 3·τ, 0) -> p = (.75, .25)
    tau = 0.5
    student = torch.tensor([[0.0, 0.0, 0.9]])
    teacher = torch.tensor([[math.log(3) * tau, 0.0, -0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = frame_kd_loss(student, teacher, mask, temperature=tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_loop_oracle(reduction):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        nq, t = 7, 9
        student = torch.rand(nq, t, generator=g) * 2 - 1
        teacher = torch.rand(nq, t, generator=g) * 2 - 1
        lengths = torch.randint(1, t + 1, (nq,), generator=g)
        mask = (torch.arange(t)[None] < lengths[:, None]).float()
        got = frame_kd_loss(student, teacher, mask, temperature=0.2, reduction=reduction)
        assert got.item() == pytest.approx(kl_oracle(student, teacher, mask, 0.2, reduction),
                                           rel=1e-5, abs=1e-6)


def test_sum_grows_with_queries_mean_does_not():
    student = torch.tensor([[0.1, 0.5, 0.3]])
    teacher = torch.tensor([[0.4, 0.2, 0.0]])
    mask = torch.ones(1, 3)
    one = frame_kd_loss(student, teacher, mask)
    four = frame_kd_loss(student.repeat(4, 1), teacher.repeat(4, 1), mask.repeat(4, 1))
    four_mean = frame_kd_loss(student.repeat(4, 1), teacher.repeat(4, 1), mask.repeat(4, 1),
                              reduction="mean")
    assert four.item() == pytest.approx(4 * one.item(), rel=1e-6)
    assert four_mean.item() == pytest.approx(one.item(), rel=1e-6)


def test_masked_frames_contribute_exactly_zero():
    g = torch.Generator().manual_seed(1)
    student = torch.rand(3, 6, generator=g)
    teacher = torch.rand(3, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).float()
    base = frame_kd_loss(student, teacher, mask)
    # changing padded values on either side changes nothing
    s2 = torch.where(mask > 0, student, torch.full_like(student, 50.0))
    t2 = torch.where(mask > 0, teacher, torch.full_like(teacher, -50.0))
    assert frame_kd_loss(s2, t2, mask).item() == base.item()
    s = student.clone().requires_grad_(True)
    frame_kd_loss(s, teacher, mask).backward()
    assert torch.all(s.grad[mask == 0] == 0)
    assert torch.any(s.grad[mask > 0] != 0)


def test_identical_distributions_give_zero():
    x = torch.rand(4, 5)
    assert frame_kd_loss(x, x.clone(), torch.ones(4, 5)).abs().item() < 1e-6


def test_target_distribution_with_zeros():
    tau = 0.2
    student = torch.tensor([[0.0, 0.2, 0.4, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    target = torch.tensor([[0.0, 0.4, 0.6, 0.0]])     # 0·log 0 = 0 on frame 0
    log_q = torch.log_softmax(student[:, :3] / tau, dim=1)[0]
    expected = 0.4 * (math.log(0.4) - log_q[1].item()) + 0.6 * (math.log(0.6) - log_q[2].item())
    got = frame_kd_loss(student, None, mask, temperature=tau, target=target)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the target path equals the teacher path when the target is the teacher softmax
    teacher = torch.tensor([[0.3, 0.1, 0.2, 9.0]])
    p = torch.softmax(torch.tensor([[0.3, 0.1, 0.2]]) / tau, dim=1)
    p = torch.cat([p, torch.zeros(1, 1)], dim=1)
    assert frame_kd_loss(student, None, mask, target=p).item() == pytest.approx(
        frame_kd_loss(student, teacher, mask).item(), rel=1e-6)


def test_bad_arguments():
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="reduction"):
        frame_kd_loss(x, x, torch.ones(2, 3), reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        frame_kd_loss(x, x, torch.ones(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="target"):
        frame_kd_loss(x, None, torch.ones(2, 3))
