"""Selected MLflow runs -> one tidy DataFrame (one row per run) plus their per-query ranks.

Selection (docs/architecture.md §7, §8 step 8; docs/reports.md):

* ``study`` given: the parent run of that study (tag ``kind=study``, ``study=<name>``) and
  its trials (runs tagged ``study=<name>`` that are not the parent);
* no selection flag at all: the *latest* study (the newest parent run) and its trials; with no
  study in the store, every run;
* only filters (experiment, method, collection, tag): every run matching them, in any study.

Only runs whose status is FINISHED and whose ``trial_state`` (sweeps only) is COMPLETE are
kept; pruned trials end FINISHED but stop before the test evaluation, so they have no test
ranks. Runs of ``python -m benchmark.evaluate`` (tag ``evaluation=true``) re-score a saved
checkpoint and are left out too, so they never count as another seed, unless the selection
asks for them by that tag. The counts are reported in ``Collected.notes``.

The per-query test ranks come from each run's ``ranks_test.npz`` artifact
(``benchmark.evaluate.EvalResult.load``); the metrics of the table are recomputed from them, so
a table and a paired test always see the same numbers. Validation metrics come from
``ranks_val.npz`` (the selected epoch) when present, else from the MLflow ``val/*`` metrics.

Frame columns: run_id, run_name, experiment_id, status, start_time, method, variant,
collection, synthetic (bool), seed (int), reconstruction (bool), study, trial (float, NaN
outside sweeps), trial_state, ``val/<m>`` and ``test/<m>`` for m in R1 R5 R10 R100 SumR
(``test/`` also MedR MeanR mAP n_queries), and ``param.<key>`` for every MLflow param whose
value differs across the selected runs (seed, store paths, ``eval.*`` and the budget params
left out), ``schedule_clock``, ``epochs``, ``reference_epochs`` and their label ``budget``
(reports/budget.py), and
``mv_edges`` (the edges of the run's recorded M/V metrics, or None).
"""
from __future__ import annotations

import hashlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, cast

import pandas as pd

from benchmark import stores, tracking
from benchmark.errors import PRVRBenchError
from benchmark.evaluate import EvalInputError, EvalResult
from benchmark.mv import MVEdgesError, validate_edges
from benchmark.naming import KIND_STUDY, Tag, TrialStateTag, is_set
from reports.budget import BUDGET_PARAMS, budget_columns, budget_of

TEST_RANKS = "ranks_test.npz"
VAL_RANKS = "ranks_val.npz"
TABLE_METRICS = ("R1", "R5", "R10", "R100", "SumR")
TEST_EXTRA = ("MedR", "MeanR", "mAP", "n_queries")
KEPT_TRIAL_STATES = (TrialStateTag.COMPLETE, "")          # "" = not a sweep trial
# params that identify stores, paths or the seed, never a knob of a comparison; the evaluator's
# settings (chunk sizes, M/V edges) change no rank; the budget has its own columns; "swept/" keys
# repeat a trial's sampled values for the MLflow UI (benchmark.tracking.log_swept_params), the
# config key beside each holds the same value
_NON_KNOB_PREFIXES = ("tracking.", "data.data_root", "seed", "device", "eval.", "swept/") + BUDGET_PARAMS
MV_EDGES_PARAM = "eval.mv_edges"


class ReportError(PRVRBenchError, ValueError):
    """Base class of report errors; the message is one line naming the problem."""


class SelectionError(ReportError):
    """The selection matches no run, or names an unknown study."""


class MissingRanksError(ReportError):
    """Selected runs lack their per-query ranks artifact."""


@dataclass(frozen=True)
class Selection:
    """What to read: filters of the CLI (``None``/empty = no filter)."""

    tracking_uri: str
    experiments: tuple[str, ...] = ()
    study: str | None = None
    methods: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_filters(self) -> bool:
        return bool(self.experiments or self.methods or self.collections or self.tags)


@dataclass
class Collected:
    """The selected runs: ``frame`` (one row per run), ``ranks[run_id]`` (test ranks),
    the study's parent run (or None), the study name, and notes for the report index."""

    frame: pd.DataFrame
    ranks: dict[str, EvalResult]
    parent: dict[str, Any] | None
    study: str | None
    tracking_uri: str
    notes: list[str] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        """True when any selected run is on synthetic data."""
        return bool(self.frame["synthetic"].any())


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; a malformed item raises SelectionError naming it."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SelectionError(f"--tag {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _is_parent(run: Mapping[str, Any]) -> bool:
    return run["tags"].get(Tag.KIND) == KIND_STUDY


def find_parent(tracking_uri: str, study: str | None,
                experiments: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The parent run of ``study`` (newest when reopened copies exist), or of the latest study
    when ``study`` is None; None when the store holds no study."""
    filt = f"tags.{Tag.KIND} = '{KIND_STUDY}'"
    if study is not None:
        filt += f" and tags.{Tag.STUDY} = '{_quote(study)}'"
    parents = tracking.search_runs(tracking_uri, list(experiments) if experiments else None, filt)
    if not parents:
        if study is not None:
            raise SelectionError(f"no study named {study!r} in MLflow store "
                                 f"{stores.redact(tracking_uri)} (no parent run tagged "
                                 f"study={study!r}, kind=study)")
        return None
    return parents[0]                 # search_runs is newest first


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def select_runs(sel: Selection) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[str]]:
    """(parent, kept runs, notes) for ``sel`` (rules in the module docstring)."""
    notes: list[str] = []
    db = tracking.sqlite_path(sel.tracking_uri)
    if db is not None and not db.exists():
        raise SelectionError(f"no MLflow store at {db} (tracking URI "
                             f"{stores.redact(sel.tracking_uri)}); run a sweep first "
                             "(nox -s sweep-tvr) or pass --tracking-uri")
    exps = list(sel.experiments) if sel.experiments else None
    parent = None
    if sel.study is not None or not sel.has_filters:
        parent = find_parent(sel.tracking_uri, sel.study, exps)
    if parent is not None:
        study = parent["tags"][Tag.STUDY]
        runs = tracking.search_runs(sel.tracking_uri, exps, f"tags.{Tag.STUDY} = '{_quote(study)}'")
        runs = [r for r in runs if not _is_parent(r)]
    else:
        runs = [r for r in tracking.search_runs(sel.tracking_uri, exps) if not _is_parent(r)]
    where = (f"study {parent['tags'][Tag.STUDY]!r}" if parent is not None
             else f"MLflow store {stores.redact(sel.tracking_uri)}")
    if not runs:
        raise SelectionError(f"the selection matches no run in {where}"
                             f"{_describe(sel)}")
    kept = []
    dropped: dict[str, int] = {}
    for run in runs:
        tags = run["tags"]
        if sel.methods and tags.get(Tag.METHOD) not in sel.methods \
                and tags.get(Tag.VARIANT) not in sel.methods:
            continue
        if sel.collections and tags.get(Tag.COLLECTION) not in sel.collections:
            continue
        if any(tags.get(k) != v for k, v in sel.tags.items()):
            continue
        state = tags.get(Tag.TRIAL_STATE, "")
        if run["status"] != "FINISHED" or state not in KEPT_TRIAL_STATES:
            why = run["status"] if run["status"] != "FINISHED" else state
            dropped[why] = dropped.get(why, 0) + 1
            continue
        if Tag.VARIANT not in tags or Tag.COLLECTION not in tags:
            dropped["untagged"] = dropped.get("untagged", 0) + 1
            continue
        if is_set(tags, Tag.EVALUATION) and sel.tags.get(Tag.EVALUATION) != "true":
            # a re-evaluation of a checkpoint is not another training run (no extra seed)
            dropped["checkpoint-evaluation"] = dropped.get("checkpoint-evaluation", 0) + 1
            continue
        kept.append(run)
    if dropped:
        notes.append("left out: " + ", ".join(f"{n} {k.lower()}" for k, n in sorted(dropped.items()))
                     + " run(s) (only FINISHED runs of COMPLETE trials carry test ranks)")
    if not kept:
        raise SelectionError(f"the selection matches no finished run in {where}"
                             f"{_describe(sel)}" + (f" ({notes[0]})" if notes else ""))
    return parent, kept, notes


def _describe(sel: Selection) -> str:
    parts = []
    if sel.experiments:
        parts.append(f"experiment {','.join(sel.experiments)}")
    if sel.methods:
        parts.append(f"method {','.join(sel.methods)}")
    if sel.collections:
        parts.append(f"collection {','.join(sel.collections)}")
    if sel.tags:
        parts.append("tags " + ",".join(f"{k}={v}" for k, v in sel.tags.items()))
    return f" for {'; '.join(parts)}" if parts else ""


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> int:
    """An integer tag (seed), or -1 when absent or not an integer."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return -1


def _download(tracking_uri: str, run_id: str, name: str, cache: Path) -> Path | None:
    dst = cache / run_id
    local = dst / name
    if local.exists():
        return local
    try:
        return tracking.download_artifact(tracking_uri, run_id, name, dst)
    except tracking.TrackingError:
        return None


def load_ranks(tracking_uri: str, runs: Sequence[Mapping[str, Any]], cache: Path,
               name: str = TEST_RANKS, required: bool = True) -> dict[str, EvalResult]:
    """``{run_id: EvalResult}`` from artifact ``name`` of every run; with ``required`` a run
    without it raises MissingRanksError naming the runs."""
    out: dict[str, EvalResult] = {}
    missing = []
    for run in runs:
        path = _download(tracking_uri, run["run_id"], name, cache)
        if path is None:
            missing.append(run)
            continue
        try:
            out[run["run_id"]] = EvalResult.load(path)
        except EvalInputError as exc:
            raise MissingRanksError(f"run {run['run_name']} ({run['run_id']}): {exc}") from None
    if missing and required:
        names = ", ".join(f"{r['run_name']} ({r['run_id'][:8]})" for r in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingRanksError(
            f"{len(missing)} selected run(s) lack per-query ranks ({name} artifact): "
            f"{names}{more}; re-run them with the current training loop or narrow the selection")
    return out


def _is_knob(key: str) -> bool:
    return not any(key == p or key.startswith(p) for p in _NON_KNOB_PREFIXES)


def build_frame(runs: Sequence[Mapping[str, Any]], test: Mapping[str, EvalResult],
                val: Mapping[str, EvalResult]) -> pd.DataFrame:
    """One row per run (columns in the module docstring)."""
    rows = []
    for run in runs:
        tags, rid = run["tags"], run["run_id"]
        row: dict[str, Any] = {
            "run_id": rid, "run_name": run["run_name"], "experiment_id": run["experiment_id"],
            "status": run["status"], "start_time": run["start_time"],
            "method": tags.get(Tag.METHOD, tags[Tag.VARIANT].split(".")[0]),
            "variant": tags[Tag.VARIANT], "collection": tags[Tag.COLLECTION],
            "synthetic": is_set(tags, Tag.SYNTHETIC),
            "seed": _int(tags.get(Tag.SEED)),
            "reconstruction": is_set(tags, Tag.RECONSTRUCTION),
            "study": tags.get(Tag.STUDY, ""), "trial": _float(tags.get(Tag.TRIAL)),
            "trial_state": tags.get(Tag.TRIAL_STATE, ""),
        }
        if rid in val:
            vm = val[rid].metrics()
            row.update({f"val/{m}": float(vm[m]) for m in TABLE_METRICS})
        else:
            row.update({f"val/{m}": _float(run["metrics"].get(f"val/{m}")) for m in TABLE_METRICS})
        tm = test[rid].metrics()
        row.update({f"test/{m}": float(tm[m]) for m in TABLE_METRICS + TEST_EXTRA})
        row["test_synthetic"] = bool(test[rid].synthetic)
        row.update(budget_columns(budget_of(run["params"], f"{run['run_name']} ({rid})")))
        row["mv_edges"] = recorded_mv_edges(run["params"], f"{run['run_name']} ({rid})")
        rows.append(row)
    frame = pd.DataFrame(rows)
    # knobs that vary across the selection, as parsed numbers where they are numbers
    params = pd.DataFrame([{k: v for k, v in run["params"].items() if _is_knob(k)} for run in runs])
    if not params.empty:
        # params[name] is one column: the names of a frame built from dicts are unique
        varying = [c for c in params.columns
                   if cast(pd.Series, params[c]).astype(str).nunique(dropna=False) > 1]
        for col in sorted(varying):
            frame[f"param.{col}"] = numbers_if_all_numbers(cast(pd.Series, params[col]))
    frame["synthetic"] = frame["synthetic"] | frame["test_synthetic"]
    return frame.drop(columns="test_synthetic")


def recorded_mv_edges(params: Mapping[str, Any], run: str) -> tuple[float, ...] | None:
    """The M/V edges a run's record and metrics used (MLflow param ``eval.mv_edges``, logged
    as ``[0.0, 0.2, ...]``), or None when the run did not log it."""
    text = params.get(MV_EDGES_PARAM)
    if text is None:
        return None
    try:
        return validate_edges([float(x) for x in str(text).strip("[]()").split(",") if x.strip()])
    except (ValueError, MVEdgesError) as exc:
        raise ReportError(f"run {run}: MLflow param {MV_EDGES_PARAM!r} = {text!r} is not a "
                          f"list of M/V edges ({exc})") from None


def numbers_if_all_numbers(values: pd.Series) -> pd.Series:
    """``values`` parsed as numbers when every non-missing value is one (a knob's values, read
    back from MLflow params as strings), else unchanged."""
    numeric = cast(pd.Series, pd.to_numeric(values, errors="coerce"))  # a Series in, a Series out
    return numeric if numeric.notna().sum() == values.notna().sum() else values


def collect(sel: Selection, cache: str | Path | None = None) -> Collected:
    """Select runs, load their ranks and build the frame (see the module docstring)."""
    parent, runs, notes = select_runs(sel)
    cache = Path(cache) if cache is not None else Path(tempfile.mkdtemp(prefix="prvr-report-"))
    cache = cache / hashlib.sha1(sel.tracking_uri.encode()).hexdigest()[:10]
    test = load_ranks(sel.tracking_uri, runs, cache, TEST_RANKS, required=True)
    val = load_ranks(sel.tracking_uri, runs, cache, VAL_RANKS, required=False)
    frame = build_frame(runs, test, val)
    frame = frame.sort_values(["collection", "method", "variant", "seed", "start_time"],
                              kind="stable").reset_index(drop=True)
    study = parent["tags"].get(Tag.STUDY) if parent is not None else None
    return Collected(frame=frame, ranks=test, parent=parent, study=study,
                     tracking_uri=sel.tracking_uri, notes=notes)

