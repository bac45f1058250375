"""The tracking protocol the training loop writes through (the loop never imports mlflow).

The MLflow implementation lives in ``benchmark/tracking.py``. A caller opens a run (a
``RunTracker``) as a context manager, which ends it FINISHED, or FAILED when an exception
escapes, so finished epochs survive a crash; ``fit`` only logs into it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol


class RunTracker(Protocol):
    @property
    def run_id(self) -> str | None: ...             # None when nothing is tracked

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


class NullTracker:
    """Tracks nothing; used when no tracking URI is configured and in unit tests."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc) -> None:
        return None
