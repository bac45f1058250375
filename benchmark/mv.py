"""Moment-to-video ratio (M/V) bins: edges, labels and per-query bin assignment.

The M/V value itself comes from the data layer (``SplitData.mv``, already rounded to 6
decimals, docs/datasets.md §1); this module only bins it. Bins are right-closed,
(e_0, e_1], (e_1, e_2], ..., so M/V = 1 falls in the last bin of edges ending at 1 and M/V = 0
falls in no bin (docs/datasets.md §1, §4.5). Values and edges are rounded to 6 decimals before
any comparison: stored times carry float noise (a 90.71 s moment in a ``90.71000000000001`` s
video), and plain float division misbins queries that sit exactly on an edge.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from benchmark.errors import PRVRBenchError

#: docs/architecture.md §4: five width-0.2 right-closed bins, (0, 0.2] ... (0.8, 1.0]. The one
#: default: ``EvalConfig.mv_edges`` (hence the run record and the ``test_mv/*`` MLflow metrics),
#: the synthetic profiles' five bins, the README, and the report when runs recorded no edges.
DEFAULT_MV_EDGES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: docs/datasets.md §1 precision rule.
MV_DECIMALS = 6


class MVEdgesError(PRVRBenchError, ValueError):
    """Bin edges are not a strictly increasing sequence of at least two values in [0, 1]."""


class MVValueError(PRVRBenchError, ValueError):
    """An M/V array is malformed (wrong shape, NaN, or outside [0, 1])."""


def validate_edges(edges: Sequence[float] | np.ndarray | None = None) -> tuple[float, ...]:
    """Return the edges as a tuple of floats rounded to 6 decimals, or raise ``MVEdgesError``.

    ``None`` means ``DEFAULT_MV_EDGES``.
    """
    if edges is None:
        edges = DEFAULT_MV_EDGES
    try:
        values = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MVEdgesError(f"M/V bin edges {edges!r} are not numbers") from err
    if values.ndim != 1 or values.size < 2:
        raise MVEdgesError(f"M/V bin edges need at least two values in a flat list, got {edges!r}")
    if not np.isfinite(values).all():
        raise MVEdgesError(f"M/V bin edges must be finite, got {edges!r}")
    values = np.round(values, MV_DECIMALS)
    if values[0] < 0.0 or values[-1] > 1.0:
        raise MVEdgesError(f"M/V bin edges must lie within [0, 1], got {edges!r}")
    if not (np.diff(values) > 0).all():
        raise MVEdgesError(f"M/V bin edges must be strictly increasing, got {edges!r}")
    return tuple(float(v) for v in values)


def _format_edge(value: float) -> str:
    text = f"{value:.{MV_DECIMALS}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text   # 0.2 -> "0.2", 0 -> "0.0", 0.15 -> "0.15"


def bin_labels(edges: Sequence[float] | None = None) -> list[str]:
    """Labels ``"0.0-0.2"``, ``"0.2-0.4"``, ... of the right-closed bins between ``edges``."""
    values = validate_edges(edges)
    return [f"{_format_edge(lo)}-{_format_edge(hi)}" for lo, hi in zip(values[:-1], values[1:])]


def assign_bins(mv: np.ndarray, edges: Sequence[float] | None = None) -> np.ndarray:
    """Bin index of every query's M/V; -1 for values in no bin (M/V = 0, or outside the edges).

    bin_i = b such that e_b < round(mv_i, 6) <= e_{b+1}.

    Shapes: mv (Nq,) float in [0, 1]; returns (Nq,) int64 in [-1, len(edges) - 2].
    """
    values = validate_edges(edges)
    mv = np.asarray(mv, dtype=np.float64)
    if mv.ndim != 1:
        raise MVValueError(f"M/V must be a flat (Nq,) array, got shape {mv.shape}")
    nan = np.isnan(mv)
    if nan.any():
        raise MVValueError(f"M/V is NaN for query index {int(np.flatnonzero(nan)[0])}")
    mv = np.round(mv, MV_DECIMALS)
    outside = (mv < 0.0) | (mv > 1.0)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise MVValueError(f"M/V must lie in [0, 1]; query index {first} has {float(mv[first])!r}")
    # side="left": an M/V equal to an edge e_b lands at b, i.e. in bin b - 1, (e_{b-1}, e_b].
    bins = np.searchsorted(np.asarray(values), mv, side="left") - 1       # (Nq,)
    bins[(bins < 0) | (bins >= len(values) - 1)] = -1
    return bins.astype(np.int64)
