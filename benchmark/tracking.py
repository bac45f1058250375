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
* **The MLflow UI** (MLflow 3.17; docs/toolchain.md "MLflow UI"): experiments are created as
  model-training experiments (tag ``mlflow.experimentKind = custom_model_development``); a
  trial logs its swept values again under ``swept/`` (:func:`log_swept_params`), and
  :func:`publish_comparison` stores a study's comparison view on its experiment, which
  :func:`comparison_url` opens: the trial runs, flat, best ``val/SumR`` first, with the swept
  parameters, ``val/SumR``, ``test/SumR`` and the trial state as columns. A SQL store that
  MLflow creates on our behalf gets an empty "Default" experiment; :func:`client_for` deletes
  (soft) exactly that one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping
from urllib.parse import quote, unquote, urlparse

# Telemetry does a DNS lookup at import (docs/toolchain.md): off before mlflow is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from benchmark.errors import PRVRBenchError  # noqa: E402
from benchmark.naming import KIND_STUDY, RunIdentity, Tag  # noqa: E402
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

# ref: the MLflow 3.17.2 UI bundle (mlflow/server/js/build/static/js): the experiment-kind
# selector writes this experiment tag; "custom_model_development" is its model-training kind
# (the GenAI kind is "genai_development").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
# ref: same bundle: "Share" stores the runs-table state (search facets + selected columns) as
# the experiment tag mlflow.sharedViewState.<key>; the URL parameter viewStateShareKey=<key>
# loads it. workflowType=machine_learning selects the model-training pages (3.17 decides the
# page kind by this URL parameter or the sidebar switch, whatever the experiment tag says).
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 20000
SWEPT_PARAM_PREFIX = "swept/"            # config keys never hold '/': no clash with flatten(cfg)
COMPARISON_METRICS = ("val/SumR", "test/SumR")
COMPARISON_ORDER_METRIC = "val/SumR"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
# column ids of the 3.17 runs grid that every view has (run name, created, duration)
_RUN_NAME_COLUMN = "attributes.`Run Name`"
_FIXED_COLUMNS = ("runDateAndNestInfo", "duration")
DEFAULT_EXPERIMENT_ID = "0"              # MLflow's SQL store creates it ("Default") on open
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")   # mlflow DATABASE_ENGINES


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


def is_database_uri(uri: str) -> bool:
    """True for a database store MLflow opens in this process (``sqlite:``,
    ``postgresql+psycopg2:``, ...), False for a tracking server (``http(s):``) and the rest."""
    return urlparse(uri).scheme.split("+")[0] in _DATABASE_SCHEMES


def client_for(tracking_uri: str) -> "mlflow.MlflowClient":
    """One cached client per URI and process (a database store checks its schema once).

    Opening a database store whose experiment 0 is missing makes MLflow create an empty
    "Default" experiment (``SqlAlchemyStore.__init__``); when that happened during this call
    it is deleted again (see :func:`retire_new_default_experiment`)."""
    if tracking_uri not in _CLIENTS:
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        # Processes opening one new SQLite store at once race on MLflow's schema migration
        # ("Online migration expected to match one row ..."): serialise the first open (and
        # the schema check it triggers) with a lock file next to the database.
        with _sqlite_init_lock(db):
            opened_ms = int(time.time() * 1000)
            try:
                client = mlflow.MlflowClient(tracking_uri=tracking_uri)
                if is_database_uri(tracking_uri):
                    client.search_experiments(max_results=1)   # forces schema creation now
                    retire_new_default_experiment(client, opened_ms)
            except Exception as exc:  # noqa: BLE001 - any store failure is reported the same way
                raise TrackingError(f"cannot open MLflow tracking store {redact(tracking_uri)}: "
                                    f"{redact(str(exc))}") from None
        _CLIENTS[tracking_uri] = client
    return _CLIENTS[tracking_uri]


def retire_new_default_experiment(client: "mlflow.MlflowClient", since_ms: int) -> bool:
    """Delete (soft) the empty "Default" experiment MLflow created while opening the store.

    MLflow's SQL store inserts experiment 0 "Default" whenever the database lacks it, and
    cannot be told not to. A deleted experiment 0 counts as present, so it is not created
    again (not by a later client, nor by ``mlflow ui``), and the UI lists active experiments
    only. Only an experiment 0 created at or after ``since_ms`` (by this process's store, whose
    clock stamps ``creation_time``, or a concurrent worker's), still active and without runs is
    touched: a Default that already held runs, or existed before, is left alone. ``mlflow gc``
    purges deleted experiments; the next open then creates Default again and deletes it again.
    Returns True when it deleted one."""
    from mlflow.entities import ViewType

    try:
        exp = client.get_experiment(DEFAULT_EXPERIMENT_ID)
    except MlflowException:
        return False
    if (exp.lifecycle_stage != "active" or exp.name != "Default"
            or (exp.creation_time or 0) < since_ms):
        return False
    if client.search_runs([DEFAULT_EXPERIMENT_ID], max_results=1, run_view_type=ViewType.ALL):
        return False
    try:
        client.delete_experiment(DEFAULT_EXPERIMENT_ID)
    except MlflowException:
        # a concurrent worker deleted it first; anything else is a real failure
        if client.get_experiment(DEFAULT_EXPERIMENT_ID).lifecycle_stage == "active":
            raise
        return False
    return True


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
    """Experiment id of ``name``, creating it (with the §9 artifact location for SQLite) as a
    model-training experiment (``mlflow.experimentKind``); an existing experiment without a
    kind gets that tag, one with a kind keeps it."""
    client = client_for(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} in {redact(tracking_uri)} is deleted;"
                                " restore it in the UI or pick another name")
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG,
                                      EXPERIMENT_KIND_TRAINING)
        return exp.experiment_id
    location = artifact_location or default_artifact_location(tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING})
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



# -- the MLflow UI: swept values and a study's comparison view ----------------------------------
def swept_param_name(key: str) -> str:
    """The param name a swept value is logged under again: ``swept/<dotted config key>``."""
    return validate_name(SWEPT_PARAM_PREFIX + validate_name(key, "swept param"), "swept param")


def log_swept_params(run: MLflowRunTracker, values: Mapping[str, Any]) -> None:
    """Log a trial's swept values (the search space's ``{dotted key: value}``) a second time,
    as ``swept/<key>``, next to the flattened config.

    The flattened config holds every knob, swept or not, and a conditional knob's default
    where the trial did not use it (``method.kd_decay.base`` of a constant decay); the
    ``swept/`` params hold exactly what the sampler chose, so the store alone says which
    params a study swept (:func:`publish_comparison` builds its columns from them) and a knob a
    trial did not sample shows as empty in the UI. Floats are written with 6 significant
    digits (``0.00016096`` for ``0.00016096044177103615``) to fit a table column; the exact
    value stays in the config param."""
    if values:
        run.log_params({swept_param_name(k): _swept_value(v) for k, v in values.items()})


def _swept_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _check_study_name(study: str) -> str:
    if not isinstance(study, str) or not study or "'" in study or '"' in study or "`" in study:
        raise TrackingError(f"study name {study!r} cannot be used in an MLflow search filter "
                            "(empty, or holds a quote)")
    return study


def comparison_share_key(study: str) -> str:
    """The UI's share key of a study's comparison view: the study name itself when it holds
    only letters, digits and ``._-``, else those characters plus a short hash (``+`` -> ``-``)."""
    _check_study_name(study)
    if re.fullmatch(r"[A-Za-z0-9._-]+", study):
        return study
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", study)
    return f"{safe}-{hashlib.sha256(study.encode()).hexdigest()[:8]}"


def comparison_view(study: str, swept_keys: Iterable[str]) -> dict[str, Any]:
    """The runs-table state of a study's comparison, in the shape the MLflow 3.17 UI shares
    views: search facets (a filter keeping the study's trial runs, which also shows them flat
    rather than folded under the parent run; best ``val/SumR`` first) and the selected columns
    (``swept/`` params, ``val/SumR``, ``test/SumR``, the ``trial_state`` tag)."""
    keys = sorted(set(swept_keys))
    params = [f"params.`{swept_param_name(k)}`" for k in keys]
    columns = [*params, *(f"metrics.`{validate_name(m)}`" for m in COMPARISON_METRICS),
               f"tags.`{Tag.TRIAL_STATE}`"]
    # widths (pixels) for the run name and the swept params, whose names the default 100 px
    # cut short; the grid applies widths through the column order, hence the full order
    widths = {_RUN_NAME_COLUMN: 300}
    widths.update({c: min(220, max(120, 7 * len(k) + 44)) for c, k in zip(params, keys)})
    return {
        "searchFilter": f"tags.{Tag.STUDY} = '{_check_study_name(study)}' AND "
                        f"tags.{Tag.TRIAL} LIKE '%'",
        "orderByKey": f"metrics.`{COMPARISON_ORDER_METRIC}`",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": [_RUN_NAME_COLUMN, *_FIXED_COLUMNS, *columns],
        "columnWidths": widths,
    }


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The runs table of one experiment in the model-training pages of the UI."""
    return (f"{base_url.rstrip('/')}/#/experiments/{quote(str(experiment_id), safe='')}/runs"
            "?workflowType=machine_learning")


def comparison_url(base_url: str, experiment_id: str, study: str) -> str:
    """The URL that opens ``study``'s comparison in the UI served at ``base_url``.

    It depends on the study, not on its swept keys, so it stays the same while a study gains
    trials; it shows the columns once :func:`publish_comparison` has stored the view."""
    return (f"{experiment_url(base_url, experiment_id)}"
            f"&viewStateShareKey={quote(comparison_share_key(study), safe='')}")


def _study_runs(tracking_uri: str, study: str) -> list[dict[str, Any]]:
    return search_runs(tracking_uri, None, f"tags.{Tag.STUDY} = '{_check_study_name(study)}'")


def swept_keys_of(runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The config keys the given runs logged under ``swept/``, sorted."""
    keys = {k[len(SWEPT_PARAM_PREFIX):] for r in runs for k in r["params"]
            if k.startswith(SWEPT_PARAM_PREFIX)}
    return sorted(keys)


def publish_comparison(tracking_uri: str, study: str, *, base_url: str = DEFAULT_UI_URL,
                       swept_keys: Iterable[str] | None = None) -> str:
    """Store ``study``'s comparison view on its experiment and return :func:`comparison_url`.

    The experiment is the one holding the study's runs (tag ``study``); the columns are
    ``swept_keys``, or else every key the study's trials logged with :func:`log_swept_params`.
    Idempotent: one experiment tag per study, overwritten with the current view; calling it
    again after more trials picks up knobs that only later trials sampled."""
    runs = _study_runs(tracking_uri, study)
    if not runs:
        raise TrackingError(f"no MLflow run of study {study!r} in {redact(tracking_uri)} "
                            "(is it the right --tracking-uri?)")
    experiments = sorted({r["experiment_id"] for r in runs})
    if len(experiments) != 1:
        raise TrackingError(f"study {study!r} has runs in several MLflow experiments "
                            f"({', '.join(experiments)}); a comparison view needs one")
    trials = [r for r in runs if Tag.TRIAL in r["tags"]]
    keys = swept_keys_of(trials) if swept_keys is None else list(swept_keys)
    value = json.dumps(comparison_view(study, keys), separators=(",", ":"))
    if len(value) > MAX_EXPERIMENT_TAG_VALUE_LENGTH:
        raise TrackingError(f"comparison view of study {study!r} is {len(value)} characters, over "
                            f"MLflow's {MAX_EXPERIMENT_TAG_VALUE_LENGTH} for an experiment tag")
    tag = validate_name(SHARED_VIEW_TAG_PREFIX + comparison_share_key(study), "tag")
    client_for(tracking_uri).set_experiment_tag(experiments[0], tag, value)
    return comparison_url(base_url, experiments[0], study)


def publish_all_comparisons(tracking_uri: str, base_url: str = DEFAULT_UI_URL
                            ) -> list[tuple[str, str]]:
    """:func:`publish_comparison` for every study in the store (a parent run tagged
    ``kind=study``), newest first: ``[(study, url), ...]``."""
    parents = search_runs(tracking_uri, None, f"tags.{Tag.KIND} = '{KIND_STUDY}'")
    studies = list(dict.fromkeys(r["tags"][Tag.STUDY] for r in parents if Tag.STUDY in r["tags"]))
    return [(s, publish_comparison(tracking_uri, s, base_url=base_url)) for s in studies]


def ui_links(tracking_uri: str, base_url: str = DEFAULT_UI_URL) -> list[str]:
    """Lines naming the UI pages of a store: each study's comparison (published now), else
    each experiment's runs table; for ``nox -s mlflow-ui`` and the sweep's closing lines."""
    lines = [f"{study}: {url}" for study, url in publish_all_comparisons(tracking_uri, base_url)]
    if lines:
        return [f"compare trials in the MLflow UI ({len(lines)} studies, newest first):", *lines]
    exps = client_for(tracking_uri).search_experiments()
    if not exps:
        return [f"no experiments in {redact(tracking_uri)} yet: run a sweep first "
                f"(nox -s sweep-tvr); the UI is at {base_url}"]
    return ["no sweep study in this store yet; runs tables:",
            *(f"{e.name}: {experiment_url(base_url, e.experiment_id)}" for e in exps)]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.tracking --tracking-uri URI [--base-url URL]``: publish every
    study's comparison view and print the URLs (:func:`ui_links`)."""
    import argparse

    from benchmark import stores

    ap = argparse.ArgumentParser(prog="python -m benchmark.tracking",
                                 description="Publish the MLflow UI comparison view of every "
                                             "study in a store and print the URLs that open them.")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow store (default: MLFLOW_TRACKING_URI, else the run directory's)")
    ap.add_argument("--runs-dir", default=None, help="run directory (default: ./runs)")
    ap.add_argument("--base-url", default=DEFAULT_UI_URL, help="where the UI is served")
    args = ap.parse_args(argv)
    uri = stores.mlflow_uri(args.tracking_uri, stores.runs_dir(args.runs_dir))
    try:
        for line in ui_links(uri, args.base_url):
            print(line)
    except TrackingError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
