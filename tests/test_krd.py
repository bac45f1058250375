"""KRD target refinement (docs/methods.md §9.3.5) on hand-made teacher curves and a loop oracle."""
from __future__ import annotations

import math

import pytest
import torch

from methods.losses.krd import (
    KRDInputError,
    refine_target,
    select_segment,
    smooth_scores,
    window_sizes,
)

PAD = 100.0  # a huge value in padded slots: if padding ever entered a window it would show

# one query, 5 valid frames then 2 padded ones
CURVE = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3, PAD, PAD]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 1, 1, 0, 0]], dtype=torch.float64)


def _softmax(values, tau):
    e = [math.exp(v / tau) for v in values]
    return [x / sum(e) for x in e]


def test_mean_smoothing_hand_values():
    got = smooth_scores(CURVE, MASK, 3)
    want = [(0.1 + 0.5) / 2, (0.1 + 0.5 + 0.2) / 3, (0.5 + 0.2 + 0.9) / 3,
            (0.2 + 0.9 + 0.3) / 3, (0.9 + 0.3) / 2, 0.0, 0.0]
    assert torch.allclose(got[0], torch.tensor(want, dtype=torch.float64), atol=1e-12)
    got5 = smooth_scores(CURVE, MASK, 5)
    want5 = [0.8 / 3, 1.7 / 4, 2.0 / 5, 1.9 / 4, 1.4 / 3, 0.0, 0.0]
    assert torch.allclose(got5[0], torch.tensor(want5, dtype=torch.float64), atol=1e-12)


def test_max_smoothing_hand_values():
    got = smooth_scores(CURVE, MASK, 3, op="max")
    assert got[0].tolist() == [0.5, 0.5, 0.9, 0.9, 0.9, 0.0, 0.0]


def test_window_one_is_identity_on_valid_frames():
    for op in ("mean", "max"):
        got = smooth_scores(CURVE, MASK, 1, op=op)
        assert torch.equal(got[0, :5], CURVE[0, :5])
        assert torch.equal(got[0, 5:], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("window", [0, 2, 4, -1])
def test_even_or_non_positive_window_rejected(window):
    with pytest.raises(KRDInputError, match="krd.window"):
        smooth_scores(CURVE, MASK, window)
    with pytest.raises(KRDInputError, match="krd.window"):
        refine_target(CURVE, MASK, window=window, delta=0.2, lam=0.5, temperature=0.2)


def test_delta_selection_hand_cases():
    smoothed = smooth_scores(CURVE, MASK, 3)  # [.3, .2667, .5333, .4667, .6]; M=.6, m=.2667
    keep = lambda d: select_segment(smoothed, MASK, d)[0].nonzero().flatten().tolist()  # noqa: E731
    assert keep(0.0) == [4]
    assert keep(0.1) == [4]           # threshold .5667
    assert keep(0.3) == [2, 4]        # threshold .5
    assert keep(0.5) == [2, 3, 4]     # threshold .4333
    assert keep(1.0) == [0, 1, 2, 3, 4]
    with pytest.raises(KRDInputError, match="krd.delta"):
        select_segment(smoothed, MASK, 1.5)


def test_flat_curve_keeps_every_valid_frame():
    flat = torch.tensor([[0.4, 0.4, 0.4, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert select_segment(flat, mask, 0.0)[0].tolist() == [True, True, True, False]


def test_refined_target_and_lambda_mixing_hand_values():
    tau = 0.2
    sm = [0.6 / 2, 0.8 / 3, 1.6 / 3, 1.4 / 3, 1.2 / 2]
    ref_kept = _softmax([sm[2], sm[4]], tau)
    ref = [0.0, 0.0, ref_kept[0], 0.0, ref_kept[1]]
    raw = _softmax([0.1, 0.5, 0.2, 0.9, 0.3], tau)
    for lam in (0.0, 0.25, 0.5, 1.0):
        got = refine_target(CURVE, MASK, window=3, delta=0.3, lam=lam, temperature=tau)
        want = [lam * a + (1 - lam) * b for a, b in zip(ref, raw)] + [0.0, 0.0]
        assert torch.allclose(got[0], torch.tensor(want, dtype=torch.float64), atol=1e-12), lam
        assert got[0, 5:].eq(0).all()
        assert math.isclose(float(got.sum()), 1.0, abs_tol=1e-12)


def test_uniform_refined_target():
    got = refine_target(CURVE, MASK, window=3, delta=0.3, lam=1.0, temperature=0.2,
                        refined="uniform")
    assert got[0].tolist() == [0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.0]


def _raw(r, mask, tau):
    return (r / tau).masked_fill(mask == 0, float("-inf")).softmax(-1)


def test_special_cases_reduce_to_raw_dl_dkd_target():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(6, 9, generator=g)
    mask = (torch.arange(9)[None] < torch.tensor([9, 1, 4, 7, 2, 5])[:, None]).float()
    raw = _raw(r, mask, 0.2)
    lam0 = refine_target(r, mask, window=5, delta=0.2, lam=0.0, temperature=0.2)
    assert torch.equal(lam0, raw)
    w1d1 = refine_target(r, mask, window=1, delta=1.0, lam=1.0, temperature=0.2)
    assert torch.equal(w1d1, raw)


def test_delta_zero_lambda_one_puts_all_mass_on_smoothed_argmax():
    r = torch.tensor([[0.1, 0.8, 0.1, 0.1, 0.7, 0.9, 0.2, 9.0],
                      [0.3, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0]]).float()
    got = refine_target(r, mask, window=3, delta=0.0, lam=1.0, temperature=0.2)
    # row 0 smoothed: frame 5 = (.7+.9+.2)/3 = .6 is the unique max (raw arg-max of valid is 5 too,
    # but frame 4 = (.1+.7+.9)/3 = .5667 is not kept); row 1 is flat: a tie over all 3 valid frames
    assert got[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert torch.allclose(got[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0]))


def _oracle(r, mask, window, delta, lam, tau, refined, smooth):
    out = torch.zeros_like(r)
    for i in range(r.shape[0]):
        idx = [t for t in range(r.shape[1]) if mask[i, t] > 0]
        vals = {t: float(r[i, t]) for t in idx}
        w = window if isinstance(window, int) else int(window[i])
        half = (w - 1) // 2
        sm = {}
        for t in idx:
            win = [vals[u] for u in idx if abs(u - t) <= half]
            sm[t] = sum(win) / len(win) if smooth == "mean" else max(win)
        top, bottom = max(sm.values()), min(sm.values())
        kept = [t for t in idx if sm[t] - bottom >= (1 - delta) * (top - bottom)]
        if refined == "softmax":
            z = sum(math.exp(sm[t] / tau) for t in kept)
            ref = {t: math.exp(sm[t] / tau) / z for t in kept}
        else:
            ref = {t: 1 / len(kept) for t in kept}
        z = sum(math.exp(vals[t] / tau) for t in idx)
        for t in idx:
            out[i, t] = lam * ref.get(t, 0.0) + (1 - lam) * math.exp(vals[t] / tau) / z
    return out


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_oracle(seed):
    g = torch.Generator().manual_seed(seed)
    n, t = 7, 12
    r = torch.rand(n, t, generator=g, dtype=torch.float64) * 0.6 - 0.1
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).double()
    r = r.masked_fill(mask == 0, -5.0)
    for window, delta, lam, refined, smooth in [(5, 0.2, 0.5, "softmax", "mean"),
                                                (3, 0.4, 0.75, "uniform", "mean"),
                                                (7, 0.1, 0.25, "softmax", "max"),
                                                (9, 0.0, 1.0, "softmax", "mean")]:
        got = refine_target(r, mask, window=window, delta=delta, lam=lam, temperature=0.2,
                            refined=refined, smooth=smooth)
        want = _oracle(r, mask, window, delta, lam, 0.2, refined, smooth)
        assert torch.allclose(got, want, atol=1e-10), (window, delta, lam, refined, smooth)


def test_target_carries_no_gradient_and_rejects_bad_input():
    r = torch.rand(2, 4, requires_grad=True)
    mask = torch.ones(2, 4)
    assert not refine_target(r, mask, window=3, delta=0.2, lam=0.5, temperature=0.2).requires_grad
    with pytest.raises(KRDInputError, match="row 1"):
        refine_target(r, torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]]), window=3, delta=0.2,
                      lam=0.5, temperature=0.2)
    with pytest.raises(KRDInputError, match="krd.lam"):
        refine_target(r, mask, window=3, delta=0.2, lam=1.5, temperature=0.2)
    with pytest.raises(KRDInputError, match="same shape"):
        refine_target(r, mask[:, :3], window=3, delta=0.2, lam=0.5, temperature=0.2)


def test_plateau_from_a_window_wider_than_the_video_is_kept_whole():
    # every window covers all n ≤ 5 valid frames, so r̃ is one value up to summation rounding
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 6, (500,), generator=g)
    mask = (torch.arange(10)[None] < lengths[:, None]).double()
    r = torch.rand(500, 10, generator=g, dtype=torch.float64) * 0.6 - 0.1
    got = refine_target(r, mask, window=9, delta=0.0, lam=1.0, temperature=0.2)
    assert torch.allclose(got, mask / lengths[:, None])


def test_window_sizes_grow_with_the_video_and_respect_the_minimum():
    lengths = torch.tensor([1, 9, 10, 39, 40, 64, 128])
    mask = (torch.arange(128)[None] < lengths[:, None]).float()
    # w = max(w_min, 2⌊f·n/2⌋ + 1), f = 0.1: ⌊0.05, .45, .5, 1.95, 2, 3.2, 6.4⌋ -> 1,1,1,3,5,7,13
    assert window_sizes(mask, 1, 0.1).tolist() == [1, 1, 1, 3, 5, 7, 13]
    assert window_sizes(mask, 5, 0.1).tolist() == [5, 5, 5, 5, 5, 7, 13]
    assert window_sizes(mask, 3, 0.0).tolist() == [3] * 7           # the fixed window
    with pytest.raises(KRDInputError, match="krd.window_fraction"):
        window_sizes(mask, 1, 1.5)
    with pytest.raises(KRDInputError, match="krd.window"):
        window_sizes(mask, 2, 0.1)


def test_per_row_windows_match_the_oracle_and_a_constant_row_window_is_the_int_window():
    g = torch.Generator().manual_seed(3)
    n, t = 9, 14
    r = torch.rand(n, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).double()
    rows = torch.tensor([1, 3, 5, 7, 9, 1, 3, 11, 5])
    for smooth in ("mean", "max"):
        got = refine_target(r, mask, window=rows, delta=0.3, lam=0.6, temperature=0.2, smooth=smooth)
        want = _oracle(r, mask, rows, 0.3, 0.6, 0.2, "softmax", smooth)
        assert torch.allclose(got, want, atol=1e-10), smooth
        same = torch.full((n,), 5)
        assert torch.equal(smooth_scores(r, mask, same, smooth), smooth_scores(r, mask, 5, smooth))
    with pytest.raises(KRDInputError, match="odd"):
        smooth_scores(r, mask, torch.full((n,), 4))
    with pytest.raises(KRDInputError, match="shape"):
        smooth_scores(r, mask, torch.full((n + 1,), 3))
