"""The training budget of a run: its schedule clock, epoch budget and reference epoch count.

Every training run logs, among its flattened-config MLflow params (issue 16):

* ``train.schedule_clock``: ``"epoch"`` (schedules count absolute epochs, as the reference
  does) or ``"progress"`` (schedules read t = p · E_ref, p the fraction of the planned steps
  done); absent in runs older than the clock, which all ran the epoch clock;
* ``train.epochs``: the epoch budget;
* ``train.reference_epochs``: E_ref, the epoch count of the method's recipe (absent in older runs).

A result means something only with its budget: 4 epochs on the epoch clock barely start the
KD and α/β schedules, 4 epochs on the progress clock run them to the end. Report tables and
figures print the budget in their captions (:func:`budget_sentence`); a table whose rows ran
different budgets lists them (:func:`budget_sentence`), and a figure that compares runs as if
only their knobs differed refuses a mixed selection (:func:`single_budget`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import pandas as pd

from benchmark.errors import PRVRBenchError

CLOCK_PARAM = "train.schedule_clock"
EPOCHS_PARAM = "train.epochs"
REFERENCE_PARAM = "train.reference_epochs"
BUDGET_PARAMS = (CLOCK_PARAM, EPOCHS_PARAM, REFERENCE_PARAM)
CLOCKS = ("epoch", "progress")
OLD_RUN_CLOCK = "epoch"          # runs logged before the clock existed ran the epoch clock
MAX_LISTED = 6                   # runs named per budget in a refusal


class MixedBudgetError(PRVRBenchError, ValueError):
    """Runs that a figure or table would compare ran different clocks or epoch budgets."""


class BudgetParamError(PRVRBenchError, ValueError):
    """A run's budget params cannot be read (unknown clock, non-integer epochs)."""


@dataclass(frozen=True)
class Budget:
    clock: str
    epochs: int | None               # None: the run did not log train.epochs
    reference_epochs: int | None     # None: the run did not log train.reference_epochs

    @property
    def label(self) -> str:
        """``clock: progress, 4 epochs of E_ref=120`` (or ``clock: epoch, 4 epochs``)."""
        epochs = "epochs not recorded" if self.epochs is None else f"{self.epochs} epochs"
        if self.clock == "progress":
            ref = "E_ref not recorded" if self.reference_epochs is None \
                else f"E_ref={self.reference_epochs}"
            return f"clock: {self.clock}, {epochs} of {ref}"
        return f"clock: {self.clock}, {epochs}"


def _int_param(value: Any, key: str, run: str) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    try:
        number = float(str(value))
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise BudgetParamError(f"run {run}: MLflow param {key!r} = {value!r} is not a "
                               "non-negative whole number")
    return int(number)


def budget_of(params: Mapping[str, Any], run: str) -> Budget:
    """The budget of one run from its MLflow params (``run`` names it in errors)."""
    clock = params.get(CLOCK_PARAM) or OLD_RUN_CLOCK
    if clock not in CLOCKS:
        raise BudgetParamError(f"run {run}: MLflow param {CLOCK_PARAM!r} = {clock!r}; expected "
                               f"one of {', '.join(CLOCKS)}")
    return Budget(str(clock), _int_param(params.get(EPOCHS_PARAM), EPOCHS_PARAM, run),
                  _int_param(params.get(REFERENCE_PARAM), REFERENCE_PARAM, run))


BUDGET_COLUMNS = ("schedule_clock", "epochs", "reference_epochs")


def budget_columns(budget: Budget) -> dict[str, Any]:
    """The frame columns of one run's budget (reports/collect.py): the three fields, and
    ``budget``, its label."""
    return {"schedule_clock": budget.clock, "epochs": budget.epochs,
            "reference_epochs": budget.reference_epochs, "budget": budget.label}


def budget_labels(frame: pd.DataFrame) -> list[str]:
    """The distinct budget labels of ``frame``, in order of first appearance."""
    return list(dict.fromkeys(frame["budget"].astype(str)))


def budget_sentence(frame: pd.DataFrame, label_col: str = "row") -> str:
    """Caption sentence: the one budget of ``frame``, or every distinct budget with the
    ``label_col`` values (rows, trials) that ran it."""
    found = budget_labels(frame)
    if len(found) == 1:
        return f"Budget: {found[0]}."
    parts = []
    for b in found:
        labels = list(dict.fromkeys(frame.loc[frame["budget"] == b, label_col].astype(str)))
        more = f" and {len(labels) - MAX_LISTED} more" if len(labels) > MAX_LISTED else ""
        parts.append(f"{b} ({', '.join(labels[:MAX_LISTED])}{more})")
    return (f"Budgets differ across rows: {'; '.join(parts)}; rows of different budgets "
            "compare training recipes as well as methods.")


def single_budget(frame: pd.DataFrame, what: str, allowed: Sequence[str] = ()) -> str | None:
    """The one budget label of the runs of ``frame``, or ``MixedBudgetError`` naming the runs of
    each budget. Budget columns named in ``allowed`` (of ``BUDGET_COLUMNS``) may vary: they are
    knobs of the comparison itself; then None when they do vary."""
    found = budget_labels(frame)
    if len(found) == 1:
        return found[0]
    varying = [c for c in BUDGET_COLUMNS if cast(pd.Series, frame[c]).astype(str).nunique() > 1]
    if all(c in allowed for c in varying):
        return None
    parts = []
    for b in found:
        sub = frame.loc[frame["budget"] == b]
        names = [f"{n} ({r[:8]})" for n, r in zip(sub["run_name"], sub["run_id"])]
        more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
        parts.append(f"{b}: {', '.join(names[:MAX_LISTED])}{more}")
    raise MixedBudgetError(f"{what} refused: its runs ran different budgets ({'; '.join(parts)}); "
                           "runs of different budgets differ in more than their knobs")
