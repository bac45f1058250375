"""RunRecord: the stable JSON of one run (docs/architecture.md §7).

Field names are a contract with reports and downstream users; add fields, never rename them.
Metric dictionaries hold ``benchmark.views.RECORD_METRICS`` (``R1 R5 R10 R100 SumR MedR MeanR
mAP``; percent for R@k, SumR their unrounded sum), computed by ``benchmark.views.split_view``
from the saved per-query ranks; NaN is written as null.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from benchmark.errors import PRVRBenchError


class RecordError(PRVRBenchError, ValueError):
    """A run record file does not match the ``RunRecord`` fields."""


@dataclass
class RunRecord:
    """One finished run.

    ``val`` holds the validation metrics of the selected (best) epoch, ``test`` the test metrics
    of that checkpoint; ``test_by_mv`` maps an M/V bin label to the same metrics plus
    ``n_queries``, or is None when the test split had no moments table; ``secondary`` maps
    ``"val"``/``"test"`` to {secondary score key: metrics}. ``epoch_seconds`` is the mean
    training time of an epoch, ``eval_seconds`` the mean time of one validation pass.
    """

    method: str                      # base name, e.g. "dl-dkd++"
    variant: str                     # full registered name, e.g. "dl-dkd++.hard-targets"
    collection: str
    synthetic: bool
    seed: int
    config: dict[str, Any]
    val: dict[str, float]
    test: dict[str, float]
    test_by_mv: dict[str, Any] | None
    secondary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    epoch_seconds: float = 0.0
    eval_seconds: float = 0.0
    # memory (MB, since fit started): peak_anon_mb is RssAnon, what the run itself allocated
    # (the figure to budget); peak_file_mb is RssFile, mapped feature pages (reclaimable page
    # cache, not allocated by the run); peak_rss_mb is the kernel's high-water mark VmHWM of
    # the whole resident set (anonymous + file-backed + shared), not the sum of the two peaks
    peak_rss_mb: float = 0.0
    peak_anon_mb: float = 0.0
    peak_file_mb: float | None = None
    cuda_peak_mb: float | None = None
    best_epoch: int = 0              # 0-based
    epochs_run: int = 0
    stopped_early: bool = False
    val_equals_test: bool = False
    git_commit: str = "unknown"
    run_id: str | None = None        # tracker run id, when tracked
    run_dir: str | None = None       # where record.json and the artifacts were written

    def to_dict(self) -> dict[str, Any]:
        return nan_to_none(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRecord":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecordError(f"run record has unknown fields {unknown}")
        data = dict(data)
        if isinstance(data.get("test_by_mv"), dict) and "absent" in data["test_by_mv"]:
            data["test_by_mv"] = None        # records written before the sentinel was dropped
        return cls(**_none_to_nan(data))

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        return cls.from_json(Path(path).read_text())


_METRIC_FIELDS = ("val", "test", "test_by_mv", "secondary")


def nan_to_none(obj: Any) -> Any:
    """``obj`` with every NaN float replaced by None, through dicts and lists (tuples become lists)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def _metrics_none_to_nan(obj: Any) -> Any:
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: _metrics_none_to_nan(v) for k, v in obj.items()}
    return obj


def _none_to_nan(data: dict[str, Any]) -> dict[str, Any]:
    """Inverse of the NaN→null step, only inside the metric dictionaries."""
    for name in _METRIC_FIELDS:
        if name in data and isinstance(data[name], dict):
            data[name] = _metrics_none_to_nan(data[name])
    return data
