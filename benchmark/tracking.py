"""MLflow behind the ``RunTracker`` protocol: the only module that imports mlflow.

Naming rules are docs/architecture.md §7; store defaults §9. Every call goes through an
explicit ``mlflow.MlflowClient`` (never the global "active run" of ``mlflow.start_run``), so
several runs in one process, or many worker processes, never share hidden state.

* **Write side.** :func:`open_run` creates (or reopens, given ``run_id``) a run and returns an
  :class:`MLflowRunTracker`, a context manager ending the run FINISHED, FAILED when an
  exception escapes, or KILLED on ``KeyboardInterrupt``. Nested runs carry the standard
  ``mlflow.parentRunId`` tag, which the UI uses to fold trials under their study.
  Metrics go out in one ``log_batch`` call per :meth:`~MLflowRunTracker.log_metrics` (one
  request per epoch with an HTTP server); params in batches of MLflow's 100-entry limit.
  Metric and param names are checked against MLflow's allowed characters *before* sending,
  so a bad name (e.g. ``R@1``) fails with the name, not deep inside a batch request.
* **Read side** (for reports and the sweep's clean-up): :func:`search_runs`,
  :func:`get_run`, :func:`download_artifact`, :func:`close_stale_runs`.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlparse

# Telemetry does a DNS lookup at import (docs/toolchain.md): off before mlflow is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from benchmark.errors import PRVRBenchError  # noqa: E402
from benchmark.naming import RunIdentity, Tag  # noqa: E402
from benchmark.stores import redact  # noqa: E402

# ref: mlflow.utils.validation (3.17): names may hold alphanumerics, '_', '-', '.', ' ', ':'
# and '/'; batch requests take at most 100 params/tags and 1000 metrics; a param value at
# most 6000 characters, a tag value 8000; keys at most 250 characters.
_NAME_RE = re.compile(r"^[/\w.\- :]*$")
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrackingError(PRVRBenchError, ValueError):
    """A tracking store or name is invalid; the message names the URI or the key."""


def validate_name(name: str, kind: str = "metric") -> str:
    """Return ``name`` if MLflow accepts it as a metric/param/tag key, else raise naming it."""
    if not isinstance(name, str) or not name:
        raise TrackingError(f"{kind} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_KEY_LENGTH:
        raise TrackingError(f"{kind} name {name[:40]!r}... is longer than {MAX_KEY_LENGTH} chars")
    if not _NAME_RE.match(name):
        raise TrackingError(
            f"{kind} name {name!r} has characters MLflow rejects (allowed: letters, digits, "
            "'_', '-', '.', ' ', ':', '/'); write 'test/R1', not 'test/R@1'")
    norm = os.path.normpath(name).replace(os.sep, "/")
    if norm != name or name.startswith("/") or name.startswith(".."):
        raise TrackingError(f"{kind} name {name!r} is not a clean relative path (MLflow rule)")
    return name


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI, or None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    # sqlite:///relative/x.db -> path "/relative/x.db"; sqlite:////abs/x.db -> "//abs/x.db"
    raw = unquote(uri[len("sqlite:///"):])
    return Path(raw)


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, ``<db dir>/mlartifacts`` (runs/mlflow.db -> runs/mlartifacts, §9);
    None (the server decides) for other stores."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


_CLIENTS: dict[str, "mlflow.MlflowClient"] = {}


@contextlib.contextmanager
def _sqlite_init_lock(db: Path | None):
    """Exclusive lock on ``<db>.lock`` while a SQLite store is first opened; no-op otherwise."""
    if db is None:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client_for(tracking_uri: str) -> "mlflow.MlflowClient":
    """One cached client per URI and process (a SQLite store checks its schema once)."""
    if tracking_uri not in _CLIENTS:
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        # Processes opening one new SQLite store at once race on MLflow's schema migration
        # ("Online migration expected to match one row ..."): serialise the first open (and
        # the schema check it triggers) with a lock file next to the database.
        with _sqlite_init_lock(db):
            try:
                client = mlflow.MlflowClient(tracking_uri=tracking_uri)
                if db is not None:
                    client.search_experiments(max_results=1)   # forces schema creation now
            except Exception as exc:  # noqa: BLE001 - any store failure is reported the same way
                raise TrackingError(f"cannot open MLflow tracking store {redact(tracking_uri)}: "
                                    f"{redact(str(exc))}") from None
        _CLIENTS[tracking_uri] = client
    return _CLIENTS[tracking_uri]


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Contact the store once, before any training starts; raises TrackingError.

    An HTTP server is probed at ``/health`` with a short timeout (the MLflow client itself
    retries for minutes); a database store answers one experiment search."""
    scheme = urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user URI
                resp.read(64)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} is not "
                                f"reachable: {redact(str(exc))}") from None
        return
    client = client_for(tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001
        raise TrackingError(f"MLflow tracking store {redact(tracking_uri)} is not reachable: "
                            f"{redact(str(exc))}") from None


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Experiment id of ``name``, creating it (with the §9 artifact location for SQLite)."""
    client = client_for(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} in {redact(tracking_uri)} is deleted;"
                                " restore it in the UI or pick another name")
        return exp.experiment_id
    location = artifact_location or default_artifact_location(tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # another worker created it between our lookup and create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
    return text


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text[:MAX_TAG_VALUE_LENGTH]


class MLflowRunTracker:
    """One MLflow run behind the ``RunTracker`` protocol (benchmark/tracker.py)."""

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = client_for(tracking_uri)
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.ended_status: str | None = None

    # -- RunTracker -------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(validate_name(k, "param"), _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(validate_name(k, "tag"), _tag_value(v)) for k, v in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start:start + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """All metrics in one ``log_batch`` request (split only beyond MLflow's 1000 limit)."""
        stamp = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            validate_name(key, "metric")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TrackingError(f"metric {key!r}: value {value!r} is not a number") from None
            items.append(Metric(key, number, stamp, int(step or 0)))
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise TrackingError(f"artifact {path} does not exist (run {self.run_id})")
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    # -- extras -----------------------------------------------------------------------------
    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def get_run(self) -> dict[str, Any]:
        return _run_dict(self.client.get_run(self.run_id))

    def end(self, status: str = "FINISHED") -> None:
        if status not in TERMINAL_STATUSES:
            raise TrackingError(f"run status must be one of {TERMINAL_STATUSES}, got {status!r}")
        self.client.set_terminated(self.run_id, status=status)
        self.ended_status = status

    def __enter__(self) -> "MLflowRunTracker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self.end(status)
        return None


def open_run(*, tracking_uri: str, experiment: str, run_name: str,
             tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None,
             run_id: str | None = None, artifact_location: str | None = None) -> MLflowRunTracker:
    """Create a run in ``experiment`` (created on first use), or reopen ``run_id``.

    ``parent_run_id`` nests the run (tag ``mlflow.parentRunId``). Reopening sets the run back
    to RUNNING and adds ``tags``; the context manager ends it again.
    """
    client = client_for(tracking_uri)
    all_tags = {k: _tag_value(v) for k, v in (tags or {}).items()}
    for key in all_tags:
        validate_name(key, "tag")
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"cannot reopen MLflow run {run_id} in "
                                f"{redact(tracking_uri)}: {exc}") from exc
        client.update_run(run_id, status="RUNNING")
        tracker = MLflowRunTracker(tracking_uri, run_id, run.info.experiment_id)
        if all_tags:
            tracker.set_tags(all_tags)
        return tracker
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    return MLflowRunTracker(tracking_uri, run.info.run_id, experiment_id)


def open_identified_run(tracking_uri: str, identity: RunIdentity, *,
                        parent_run_id: str | None = None) -> MLflowRunTracker:
    """Create the run of ``identity``: its experiment, run name and tags."""
    return open_run(tracking_uri=tracking_uri, experiment=identity.experiment,
                    run_name=identity.run_name, tags=identity.tags(), parent_run_id=parent_run_id)


# -- read side ------------------------------------------------------------------------------
def _run_dict(run) -> dict[str, Any]:
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
        "parent_run_id": data.tags.get(PARENT_TAG),
        "params": dict(data.params),
        "metrics": dict(data.metrics),
        "tags": dict(data.tags),
    }


def get_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """One run as a plain dict (keys as in :func:`search_runs`)."""
    try:
        return _run_dict(client_for(tracking_uri).get_run(run_id))
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} not found in {redact(tracking_uri)}: "
                            f"{exc}") from exc


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order."""
    hist = client_for(tracking_uri).get_metric_history(run_id, validate_name(key))
    return sorted((m.step, m.value) for m in hist)


def search_runs(tracking_uri: str, experiment_names: Iterable[str] | None = None,
                filter_string: str = "", *, order_by: list[str] | None = None,
                max_results: int | None = None) -> list[dict[str, Any]]:
    """Runs matching ``filter_string`` (MLflow search syntax, e.g. ``tags.study = 'x'``)
    in the named experiments (all active ones when None), newest first, as plain dicts with
    run_id, run_name, experiment_id, status, start_time, end_time, artifact_uri,
    parent_run_id, params, metrics and tags. Unknown experiment names are skipped."""
    client = client_for(tracking_uri)
    if experiment_names is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp_ids = []
        for name in experiment_names:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                exp_ids.append(exp.experiment_id)
    if not exp_ids:
        return []
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string=filter_string,
                                  order_by=order_by or ["attributes.start_time DESC"],
                                  max_results=1000, page_token=token)
        out.extend(_run_dict(r) for r in page)
        token = page.token
        if not token or (max_results is not None and len(out) >= max_results):
            break
    return out[:max_results] if max_results is not None else out


def download_artifact(tracking_uri: str, run_id: str, path: str, dst: Path) -> Path:
    """Copy artifact ``path`` of ``run_id`` into directory ``dst``; return the local path."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = client_for(tracking_uri).download_artifacts(run_id, path, str(dst))
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"artifact {path!r} of run {run_id} in {redact(tracking_uri)}: "
                            f"{exc}") from exc
    return Path(local)


def close_stale_runs(tracking_uri: str, run_ids: Iterable[str], *, status: str = "FAILED",
                     reason: str | None = None,
                     extra_tags: Mapping[str, str] | None = None) -> list[str]:
    """End every listed run that is still RUNNING with ``status`` (tagging ``reason`` as
    ``failure_reason``); runs already ended are left alone. Returns the ids it closed."""
    if status not in TERMINAL_STATUSES:
        raise TrackingError(f"run status must be one of {TERMINAL_STATUSES}, got {status!r}")
    client = client_for(tracking_uri)
    closed = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue
        if run.info.status != "RUNNING":
            continue
        tags = dict(extra_tags or {})
        if reason:
            tags[Tag.FAILURE_REASON] = reason
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, _tag_value(v)) for k, v in tags.items()])
        client.set_terminated(run_id, status=status)
        closed.append(run_id)
    return closed

