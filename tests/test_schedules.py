"""Schedules pinned against the tables of docs/methods.md §5.3 and §6.5."""
from __future__ import annotations

import dataclasses
import math
from typing import get_args

import pytest

from benchmark.interface import Progress
from benchmark.overrides import ConfigError, apply_overrides
from benchmark.schedules import SCHEDULE_KINDS, Schedule, ScheduleKind, schedule_delta
from methods.dl_dkd import (
    KD_INIT_KINDS,
    REFERENCE_KD_DECAYS,
    SOFT_TARGET_KINDS,
    SoftTargetKind,
    reference_beta_floor,
    soft_target_schedule,
)

EPOCHS = [0, 10, 20, 30, 40, 50, 60, 70, 80]


def values(schedule: Schedule, epochs, num_epochs: int = 120):
    return [round(schedule(Progress(epoch=e, num_epochs=num_epochs, step=0, steps_per_epoch=1)), 3)
            for e in epochs]


def test_kd_exp_table():
    assert values(REFERENCE_KD_DECAYS[1], EPOCHS[:6]) == [1.0, 0.599, 0.358, 0.215, 0.129, 0.077]


def test_kd_linear_table_and_floor():
    assert values(REFERENCE_KD_DECAYS[2], EPOCHS[:6]) == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert values(REFERENCE_KD_DECAYS[2], [95, 99, 150]) == [0.05, 0.05, 0.05]   # max(ke+b, .05)


def test_kd_sigmoid_table():
    assert values(REFERENCE_KD_DECAYS[3], EPOCHS) == [0.999, 0.996, 0.985, 0.950, 0.844, 0.607,
                                                      0.307, 0.113, 0.035]


def test_kd_constant():
    assert values(REFERENCE_KD_DECAYS[0], EPOCHS) == [1.0] * len(EPOCHS)


def test_kinds_are_one_table_and_unknown_kinds_list_it():
    assert set(REFERENCE_KD_DECAYS[w].kind for w in REFERENCE_KD_DECAYS) <= set(SCHEDULE_KINDS)
    with pytest.raises(ValueError, match="unknown schedule kind 'quadratic'; known kinds: constant, exp"):
        Schedule(kind="quadratic")  # type: ignore[arg-type]


@pytest.mark.parametrize("rising, falling", [(4, 1), (5, 2), (6, 3)])
def test_increasing_kinds_are_one_minus_the_decay(rising, falling):
    for e in range(0, 120, 7):
        up = REFERENCE_KD_DECAYS[rising].at_epoch(e)
        down = REFERENCE_KD_DECAYS[falling].at_epoch(e)
        assert up == pytest.approx(1 - down, abs=1e-12)
    assert REFERENCE_KD_DECAYS[rising].kind in KD_INIT_KINDS
    assert REFERENCE_KD_DECAYS[falling].kind not in KD_INIT_KINDS


def test_decay_way_7_capped_growth():
    s = REFERENCE_KD_DECAYS[7]
    for e in (0, 10, 50, 94, 95, 120):
        assert s.at_epoch(e) == pytest.approx(min(0.001 * 1.05 ** e, 0.1))
    assert s.at_epoch(0) == pytest.approx(0.001)
    assert s.at_epoch(120) == pytest.approx(0.1)       # 1.05^e passes 100 at e≈94.4


def test_decay_way_8_rising_capped():
    s = REFERENCE_KD_DECAYS[8]
    assert s.at_epoch(0) == pytest.approx(0.001)       # floor: 0.1·(1 − 1) = 0
    assert s.at_epoch(10) == pytest.approx(0.1 * (1 - 0.95 ** 10))
    assert s.at_epoch(100) == pytest.approx(0.1 * (1 - 0.95 ** 100))
    assert all(s.at_epoch(e) <= 0.1 for e in range(200))


def test_alpha_beta_table_section_6_5():
    alpha = soft_target_schedule("sigmoid", 0.8, 0.0)
    beta = soft_target_schedule("sigmoid", 0.8, reference_beta_floor(0.8))
    assert values(alpha, EPOCHS) == [0.799, 0.797, 0.788, 0.760, 0.675, 0.486, 0.245, 0.090, 0.028]
    assert values(beta, EPOCHS) == [0.799, 0.797, 0.788, 0.760, 0.675, 0.5, 0.5, 0.5, 0.5]
    assert beta.at_epoch(49) > 0.5 and beta.at_epoch(50) == 0.5   # floor reached at e≈49.4


def test_kd_weight_row_section_6_5():
    kd = REFERENCE_KD_DECAYS[1]
    assert [round(0.1 * kd.at_epoch(e), 3) for e in EPOCHS] == [0.1, 0.06, 0.036, 0.021, 0.013,
                                                                0.008, 0.005, 0.003, 0.002]


def test_beta_floor_rule():
    assert reference_beta_floor(0.8) == 0.5
    assert reference_beta_floor(0.5) == 0.5
    assert reference_beta_floor(0.49) == 0.0


def test_alpha_beta_alternatives():
    n = 120
    exp = soft_target_schedule("exp", 0.8, 0.5)
    assert exp.at_epoch(5, n) == pytest.approx(0.8 * 0.95 ** 5)
    assert exp.at_epoch(60, n) == 0.5                                      # floored
    lin = soft_target_schedule("linear", 0.8, 0.2)
    assert lin.at_epoch(0, n) == pytest.approx(0.8)
    assert lin.at_epoch(60, n) == pytest.approx(0.8 + (0.2 - 0.8) * 60 / 120)
    assert lin.at_epoch(120, n) == pytest.approx(0.2)
    cos = soft_target_schedule("cosine", 0.8, 0.0)
    assert cos.at_epoch(0, n) == pytest.approx(0.8)
    assert cos.at_epoch(60, n) == pytest.approx(0.4)
    assert cos.at_epoch(120, n) == pytest.approx(0.0, abs=1e-12)
    assert cos.at_epoch(30, n) == pytest.approx(0.4 * (1 + math.cos(math.pi / 4)))
    none = soft_target_schedule("none", 0.8, 0.5)
    assert values(none, EPOCHS) == [0.8] * len(EPOCHS)
    # linear/cosine read num_epochs from the Progress
    assert lin(Progress(epoch=50, num_epochs=100, step=0, steps_per_epoch=1)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown"):
        soft_target_schedule("step", 0.8, 0.0)  # type: ignore[arg-type]


def _sigma(e: float, k: float) -> float:
    return k / (k + math.exp(100.0 * e / k))           # §5.3 / §6.5: k/(k + exp(100e/k))


# One schedule per kind with non-default parameters, and its value at 0-based epoch e of n,
# written out from docs/methods.md §5.3 (decay_way table) and §6.5 (α/β alternatives).
CLOSED_FORMS = {
    "constant": (dict(start=0.7, floor=0.2), lambda e, n: 0.7),
    "exp": (dict(start=0.8, base=0.9, floor=0.05), lambda e, n: max(0.8 * 0.9 ** e, 0.05)),
    "linear": (dict(start=2.0, slope=-0.02, intercept=0.9, linear_floor=0.1, floor=0.25),
               lambda e, n: max(2.0 * max(-0.02 * e + 0.9, 0.1), 0.25)),
    "sigmoid": (dict(start=0.6, sigmoid_k=400.0, floor=0.1),
                lambda e, n: max(0.6 * _sigma(e, 400.0), 0.1)),
    "linear-anneal": (dict(start=0.8, floor=0.2), lambda e, n: max(0.8 + (0.2 - 0.8) * e / n, 0.2)),
    "cosine": (dict(start=0.8, floor=0.1),
               lambda e, n: 0.1 + 0.5 * (0.8 - 0.1) * (1 + math.cos(math.pi * e / n))),
    "rising-exp": (dict(start=0.5, base=0.9), lambda e, n: 0.5 * (1 - 0.9 ** e)),
    "rising-linear": (dict(start=0.5, slope=-0.02, intercept=0.9, linear_floor=0.1),
                      lambda e, n: 0.5 * (1 - max(-0.02 * e + 0.9, 0.1))),
    "rising-sigmoid": (dict(start=0.5, sigmoid_k=400.0), lambda e, n: 0.5 * (1 - _sigma(e, 400.0))),
    "capped-exp-growth": (dict(start=0.002, base=1.1, cap=0.05),
                          lambda e, n: min(0.002 * 1.1 ** e, 0.05)),
    "rising-capped": (dict(start=0.3, base=0.9, cap=0.2, floor=0.01),
                      lambda e, n: max(min(0.3 * (1 - 0.9 ** e), 0.2), 0.01)),
}


def test_closed_forms_cover_every_kind():
    assert set(CLOSED_FORMS) == set(get_args(ScheduleKind))


def test_kind_literals_list_their_tables_keys_in_order():
    # the Literals are written out for static checkers; they must not drift from the tables
    assert get_args(ScheduleKind) == tuple(SCHEDULE_KINDS)
    assert get_args(SoftTargetKind) == tuple(SOFT_TARGET_KINDS)
    assert set(SOFT_TARGET_KINDS.values()) <= set(SCHEDULE_KINDS)


@pytest.mark.parametrize("kind", sorted(CLOSED_FORMS))
def test_every_kind_matches_its_closed_form(kind):
    params, want = CLOSED_FORMS[kind]
    s = Schedule(kind=kind, **params)
    # epochs chosen so each floor, cap and clamp is both reached and not reached
    for n in (120, 60):
        for e in (0, 1, 3, 17, 45, 60, 119, 150):
            got = s(Progress(epoch=e, num_epochs=n, step=0, steps_per_epoch=1))
            assert got == pytest.approx(want(e, n), rel=1e-12, abs=1e-15), (kind, e, n)


def test_floor_above_start_wins_for_constant():
    assert Schedule(kind="constant", start=0.1, floor=0.3)(
        Progress(epoch=5, num_epochs=10, step=0, steps_per_epoch=1)) == 0.3


def test_schedule_is_pure_and_frozen():
    s = REFERENCE_KD_DECAYS[1]
    before = dataclasses.replace(s)
    # the value depends on the epoch only: not on steps taken nor steps per epoch
    for step, per_epoch in ((3, 5), (0, 1), (57, 5), (999, 100)):
        p = Progress(epoch=10, num_epochs=100, step=step, steps_per_epoch=per_epoch)
        assert s(p) == pytest.approx(0.95 ** 10, rel=1e-12)
    assert s == before
    with pytest.raises(dataclasses.FrozenInstanceError, match="base"):
        s.base = 0.5  # type: ignore[misc]


def test_bad_schedules_rejected():
    p = Progress(epoch=1, num_epochs=10, step=0, steps_per_epoch=1)
    with pytest.raises(ValueError, match="quadratic"):
        Schedule(kind="quadratic")(p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigmoid_k"):
        Schedule(kind="sigmoid", sigmoid_k=0.0)
    with pytest.raises(ValueError, match="base"):
        Schedule(kind="exp", base=-0.5)


def test_schedule_through_overrides():
    from dataclasses import dataclass, field

    @dataclass(frozen=True, kw_only=True)
    class Holder:
        decay: Schedule = field(default_factory=lambda: Schedule(kind="exp"))

    h = apply_overrides(Holder(), {"decay.kind": "sigmoid", "decay.sigmoid_k": "400"})
    assert h.decay == Schedule(kind="sigmoid", sigmoid_k=400.0)
    h = apply_overrides(Holder(), schedule_delta("decay", REFERENCE_KD_DECAYS[8]))
    assert h.decay == REFERENCE_KD_DECAYS[8]
    with pytest.raises(ConfigError, match="decay.kind"):
        apply_overrides(Holder(), {"decay.kind": "quadratic"})
    with pytest.raises(ConfigError, match="sigmoid_k"):
        apply_overrides(Holder(), {"decay.sigmoid_k": 0.0})
