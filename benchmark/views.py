"""Metric views of per-query ranks: the one function that turns an ``EvalResult`` into the
numbers a run reports.

Per-query ranks (``EvalResult``, saved as ``ranks_<split>.npz``) are the evaluation's only
output. ``split_view`` computes every view of them once: the run record's tables (``val``,
``test``, ``secondary``, ``test_by_mv``) and the MLflow metric names (``val/R1``,
``test/clip/SumR``, ``test_mv/0.0-0.2/R1``, ...). Reports read the saved ranks and call the
same ``EvalResult.metrics`` / ``EvalResult.by_mv``, so a table, a logged metric and a record
never disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from benchmark.evaluate import EvalResult

#: The metrics a record keeps per split and per M/V bin, in this order.
RECORD_METRICS = ("R1", "R5", "R10", "R100", "SumR", "MedR", "MeanR", "mAP")
#: Also logged to MLflow per split and score key: queries whose rank a tie-break could change.
LOGGED_EXTRA = ("tied_queries",)


def select_metrics(metrics: Mapping[str, float], extra: tuple[str, ...] = ()) -> dict[str, float]:
    """The record's metric subset (plus ``extra``) of an ``EvalResult.metrics()`` dictionary."""
    return {k: float(metrics[k]) for k in RECORD_METRICS + extra if k in metrics}


@dataclass(frozen=True)
class SplitView:
    """The views of one evaluated split.

    ``per_key[key]`` holds ``RECORD_METRICS`` plus ``LOGGED_EXTRA`` of each score key;
    ``by_mv`` maps each M/V bin label to ``RECORD_METRICS`` plus ``n_queries`` of the primary
    key, or is None when the split has no M/V values or no bins were asked for.
    """

    split: str
    primary_key: str
    per_key: Mapping[str, Mapping[str, float]]
    by_mv: Mapping[str, Mapping[str, float]] | None

    @property
    def main(self) -> dict[str, float]:
        """The record's metrics of the primary ("score") key."""
        return select_metrics(self.per_key[self.primary_key])

    @property
    def secondary(self) -> dict[str, dict[str, float]]:
        """The record's metrics of every other score key."""
        return {k: select_metrics(m) for k, m in self.per_key.items() if k != self.primary_key}

    @property
    def sumr(self) -> float:
        return float(self.per_key[self.primary_key]["SumR"])

    def flat(self) -> dict[str, float]:
        """MLflow names: ``<split>/<metric>`` for the primary key, ``<split>/<key>/<metric>``
        for the others, ``<split>_mv/<bin>/<metric>`` per bin. Non-finite values are left out
        (an empty bin has NaN metrics; MLflow would store them as missing anyway)."""
        out: dict[str, float] = {}
        for key, metrics in self.per_key.items():
            head = self.split if key == self.primary_key else f"{self.split}/{key}"
            out.update({f"{head}/{name}": value for name, value in metrics.items()})
        for label, metrics in (self.by_mv or {}).items():
            out.update({f"{self.split}_mv/{label}/{name}": value for name, value in metrics.items()})
        return {k: float(v) for k, v in out.items() if math.isfinite(float(v))}


def split_view(result: EvalResult, split: str,
               mv_edges: Sequence[float] | None = None) -> SplitView:
    """Every view of ``result``; ``mv_edges`` asks for the M/V bins (when the split has M/V)."""
    per_key = {key: select_metrics(result.metrics(key), LOGGED_EXTRA) for key in result.keys}
    by_mv = None
    if mv_edges is not None and result.has_mv:
        by_mv = {}
        for label, metrics in result.by_mv(edges=list(mv_edges)).items():
            row = select_metrics(metrics)
            row["n_queries"] = int(metrics["n_queries"])
            by_mv[label] = row
    return SplitView(split=split, primary_key=result.primary_key, per_key=per_key, by_mv=by_mv)
