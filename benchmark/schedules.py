"""Training schedules as pure functions of :class:`~benchmark.interface.Progress`.

A :class:`Schedule` is a frozen, typed description of one curve over the 0-based epoch ``e``
(the reference code updates every schedule once per epoch); calling it with a ``Progress``
returns a float and changes nothing. It replaces the reference's if/elif ladders over
``decay_way`` and ``alpha_decay`` (docs/methods.md §5.3, §6.3, §6.5; bug §5.6.6).

Kinds (``x0`` = ``start``, ``k`` = ``base``, ``n`` = ``Progress.num_epochs``):

=====================  ===========================================================  ===========
kind                   value at epoch e                                             reference
=====================  ===========================================================  ===========
constant               max(x0, floor)                                               decay_way 0, α/β None
exp                    max(x0·k^e, floor)                                           decay_way 1, α/β exp
linear                 max(x0·max(slope·e + intercept, linear_floor), floor)        decay_way 2
sigmoid                max(x0·σ(e), floor),  σ(e) = s/(s + exp(100e/s)), s=sigmoid_k  decay_way 3, α/β sigmoid
linear-anneal          max(x0 + (floor − x0)·e/n, floor)                            α/β linear
cosine                 floor + ½(x0 − floor)(1 + cos(π e/n))                        α/β cosine
rising-exp             x0·(1 − k^e)                                                 decay_way 4
rising-linear          x0·(1 − max(slope·e + intercept, linear_floor))              decay_way 5
rising-sigmoid         x0·(1 − σ(e))                                                decay_way 6
capped-exp-growth      min(x0·k^e, cap)                                             decay_way 7 (x0 .001, k 1.05, cap .1)
rising-capped          max(min(x0·(1 − k^e), cap), floor)                           decay_way 8 (x0 .1, k .95, cap .1, floor .001)
=====================  ===========================================================  ===========

The reference adds ``loss_init_weight`` to the KD weight for decay_way 4/5/6 only; that
offset belongs to the KD weight, not to the curve (see :data:`KD_INIT_KINDS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from benchmark.interface import Progress

ScheduleKind = Literal["constant", "exp", "linear", "sigmoid", "linear-anneal", "cosine",
                       "rising-exp", "rising-linear", "rising-sigmoid",
                       "capped-exp-growth", "rising-capped"]

#: Kinds to which the reference KD weight adds ``loss_init_weight`` (decay_way 4/5/6, §5.3).
KD_INIT_KINDS = frozenset({"rising-exp", "rising-linear", "rising-sigmoid"})


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One per-epoch curve; ``schedule(progress) -> float``. Defaults are the reference's
    (``exponential_k`` 0.95, ``linear_k`` −0.01, ``linear_b`` 1, ``sigmoid_k`` 800)."""

    kind: ScheduleKind = "constant"
    start: float = 1.0            # x0: initial value / multiplier of the curve
    base: float = 0.95            # ref: exponential_k (DL-DKD and DL-DKD++ train.py)
    slope: float = -0.01          # ref: linear_k
    intercept: float = 1.0        # ref: linear_b
    linear_floor: float = 0.05    # ref: max(k e + b, 0.05) inside decay_way 2/5
    sigmoid_k: float = 800.0      # ref: sigmoid_k / selfDistil_sigmoid_k
    floor: float = 0.0            # lower bound (α_min, β_min, decay_way 8's 0.001)
    cap: float = 0.1              # upper bound of the capped kinds (decay_way 7, 8)

    def __post_init__(self) -> None:
        if self.sigmoid_k <= 0:
            raise ValueError(f"Schedule.sigmoid_k must be > 0, got {self.sigmoid_k}")
        if self.base <= 0:
            raise ValueError(f"Schedule.base must be > 0, got {self.base}")

    def at_epoch(self, epoch: float, num_epochs: int = 1) -> float:
        """Value at 0-based ``epoch``; ``num_epochs`` is used by linear-anneal and cosine."""
        e, x0, k = float(epoch), self.start, self.base
        kind = self.kind
        if kind == "constant":
            return max(x0, self.floor)
        if kind == "exp":
            return max(x0 * k ** e, self.floor)
        if kind == "linear":
            return max(x0 * self._linear(e), self.floor)
        if kind == "sigmoid":
            return max(x0 * self._sigmoid(e), self.floor)
        if kind == "linear-anneal":
            return max(x0 + (self.floor - x0) * e / max(num_epochs, 1), self.floor)
        if kind == "cosine":
            return self.floor + 0.5 * (x0 - self.floor) * (1 + math.cos(math.pi * e / max(num_epochs, 1)))
        if kind == "rising-exp":
            return x0 * (1 - k ** e)
        if kind == "rising-linear":
            return x0 * (1 - self._linear(e))
        if kind == "rising-sigmoid":
            return x0 * (1 - self._sigmoid(e))
        if kind == "capped-exp-growth":
            return min(x0 * k ** e, self.cap)
        if kind == "rising-capped":
            return max(min(x0 * (1 - k ** e), self.cap), self.floor)
        raise ValueError(f"unknown schedule kind {kind!r}")

    def __call__(self, progress: Progress) -> float:
        return self.at_epoch(progress.epoch, progress.num_epochs)

    def _linear(self, e: float) -> float:
        return max(self.slope * e + self.intercept, self.linear_floor)

    def _sigmoid(self, e: float) -> float:
        s = self.sigmoid_k
        return s / (s + math.exp(100.0 * e / s))   # ref: k/(k+exp(100e/k)), §5.3


#: The reference KD decays by ``decay_way`` (docs/methods.md §5.3), with the script values.
REFERENCE_KD_DECAYS: dict[int, Schedule] = {
    0: Schedule(kind="constant"),
    1: Schedule(kind="exp"),
    2: Schedule(kind="linear"),
    3: Schedule(kind="sigmoid"),
    4: Schedule(kind="rising-exp"),
    5: Schedule(kind="rising-linear"),
    6: Schedule(kind="rising-sigmoid"),
    7: Schedule(kind="capped-exp-growth", start=0.001, base=1.05, cap=0.1),
    8: Schedule(kind="rising-capped", start=0.1, base=0.95, cap=0.1, floor=0.001),
}

SoftTargetKind = Literal["sigmoid", "exp", "linear", "cosine", "none"]

_SOFT_KINDS: dict[str, str] = {"sigmoid": "sigmoid", "exp": "exp", "linear": "linear-anneal",
                               "cosine": "cosine", "none": "constant"}


def soft_target_schedule(kind: SoftTargetKind, start: float, floor: float, *,
                         sigmoid_k: float = 800.0, base: float = 0.95) -> Schedule:
    """The DL-DKD++ α/β schedule named ``kind`` (``--alpha_decay`` / ``--belta_decay``) from
    ``start`` (α0, β0) floored at ``floor`` (docs/methods.md §6.5); ``linear``/``cosine`` run
    over ``Progress.num_epochs``; ``none`` keeps ``start``."""
    try:
        mapped = _SOFT_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown α/β schedule {kind!r}; expected one of "
                         f"{', '.join(_SOFT_KINDS)}") from None
    return Schedule(kind=mapped, start=start, floor=floor, sigmoid_k=sigmoid_k, base=base)  # type: ignore[arg-type]


def reference_beta_floor(beta0: float) -> float:
    """β_min of DL-DKD++ ``train.py``: 0.5 when β0 ≥ 0.5, else 0 (docs/methods.md §6.5)."""
    return 0.5 if beta0 >= 0.5 else 0.0


def schedule_delta(prefix: str, schedule: Schedule) -> dict[str, Any]:
    """``{prefix.field: value}`` for every field: a schedule as a registry/override delta."""
    return {f"{prefix}.{f.name}": getattr(schedule, f.name) for f in fields(schedule)}
