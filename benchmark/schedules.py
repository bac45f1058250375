"""Training schedules as pure functions of :class:`~benchmark.interface.Progress`.

A :class:`Schedule` is a frozen, typed description of one curve over the schedule time ``e``
in epochs; calling it with a ``Progress`` returns a float and changes nothing. Which time a
Progress reports is its clock (``train.schedule_clock``): the 0-based epoch, as the reference
code updates every schedule once per epoch ("epoch"), or the run's step fraction scaled to the
recipe's E_ref epochs, per step ("progress"); see ``benchmark.interface.Progress``.
``Schedule.kind`` names an entry of :data:`SCHEDULE_KINDS`, a table from kind to curve function;
an unknown kind is an error listing the known ones. Which reference switch (DL-DKD's
``decay_way``, DL-DKD++'s ``--alpha_decay``) selects which kind is the method's business
(``methods/dl_dkd.py``), not the core's.

Kinds (``x0`` = ``start``, ``k`` = ``base``, ``n`` = ``Progress.span``: the run's epochs on the
epoch clock, E_ref on the progress clock):

=====================  ===========================================================
kind                   value at epoch e
=====================  ===========================================================
constant               max(x0, floor)
exp                    max(x0·k^e, floor)
linear                 max(x0·max(slope·e + intercept, linear_floor), floor)
sigmoid                max(x0·σ(e), floor),  σ(e) = s/(s + exp(100e/s)), s=sigmoid_k
linear-anneal          max(x0 + (floor − x0)·e/n, floor)
cosine                 floor + ½(x0 − floor)(1 + cos(π e/n))
rising-exp             x0·(1 − k^e)
rising-linear          x0·(1 − max(slope·e + intercept, linear_floor))
rising-sigmoid         x0·(1 − σ(e))
capped-exp-growth      min(x0·k^e, cap)
rising-capped          max(min(x0·(1 − k^e), cap), floor)
=====================  ===========================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Literal

from benchmark.interface import Progress
from benchmark.overrides import ConfigError

#: The type of ``Schedule.kind``: the keys of :data:`SCHEDULE_KINDS`, in table order (config
#: overrides check values against it). Written out so that static checkers see the members;
#: tests/test_schedules.py checks that it equals the table's keys.
ScheduleKind = Literal["constant", "exp", "linear", "sigmoid", "linear-anneal", "cosine",
                       "rising-exp", "rising-linear", "rising-sigmoid", "capped-exp-growth",
                       "rising-capped"]


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
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(f"unknown schedule kind {self.kind!r}; known kinds: "
                              f"{', '.join(SCHEDULE_KINDS)}")
        if self.sigmoid_k <= 0:
            raise ConfigError(f"Schedule.sigmoid_k must be > 0, got {self.sigmoid_k}")
        if self.base <= 0:
            raise ConfigError(f"Schedule.base must be > 0, got {self.base}")

    def at_epoch(self, epoch: float, num_epochs: int = 1) -> float:
        """Value at 0-based ``epoch``; ``num_epochs`` is used by linear-anneal and cosine."""
        return SCHEDULE_KINDS[self.kind](self, float(epoch), num_epochs)

    def __call__(self, progress: Progress) -> float:
        """Value at the progress's schedule time (``Progress.time``, ``Progress.span``): the
        clock is the Progress's business, never the schedule's."""
        return self.at_epoch(progress.time, progress.span)


def _linear(s: Schedule, e: float) -> float:
    return max(s.slope * e + s.intercept, s.linear_floor)


def _sigmoid(s: Schedule, e: float) -> float:
    k = s.sigmoid_k
    return k / (k + math.exp(100.0 * e / k))   # ref: k/(k+exp(100e/k)), docs/methods.md §5.3


#: kind -> curve(schedule, epoch e, num_epochs n); the formulas of the module docstring.
SCHEDULE_KINDS: dict[ScheduleKind, Callable[[Schedule, float, int], float]] = {
    "constant": lambda s, e, n: max(s.start, s.floor),
    "exp": lambda s, e, n: max(s.start * s.base ** e, s.floor),
    "linear": lambda s, e, n: max(s.start * _linear(s, e), s.floor),
    "sigmoid": lambda s, e, n: max(s.start * _sigmoid(s, e), s.floor),
    "linear-anneal": lambda s, e, n: max(s.start + (s.floor - s.start) * e / max(n, 1), s.floor),
    "cosine": lambda s, e, n: s.floor + 0.5 * (s.start - s.floor) * (1 + math.cos(math.pi * e / max(n, 1))),
    "rising-exp": lambda s, e, n: s.start * (1 - s.base ** e),
    "rising-linear": lambda s, e, n: s.start * (1 - _linear(s, e)),
    "rising-sigmoid": lambda s, e, n: s.start * (1 - _sigmoid(s, e)),
    "capped-exp-growth": lambda s, e, n: min(s.start * s.base ** e, s.cap),
    "rising-capped": lambda s, e, n: max(min(s.start * (1 - s.base ** e), s.cap), s.floor),
}


def schedule_delta(prefix: str, schedule: Schedule) -> dict[str, Any]:
    """``{prefix.field: value}`` for every field: a schedule as a registry/override delta."""
    return {f"{prefix}.{f.name}": getattr(schedule, f.name) for f in fields(schedule)}
