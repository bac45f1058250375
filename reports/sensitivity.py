"""Sweep reports from the Optuna study named on a parent run: best trials and importances.

Storage URL: ``--storage``, then ``$PRVR_OPTUNA_STORAGE``, then the ``optuna_storage`` tag of
the parent run (what the sweep used, when it holds no redacted password), then the default of
``benchmark.stores`` (``sqlite:///runs/optuna.db``). Importances: ``optuna.importance`` with
the fANOVA evaluator (seeded), over the parameters every COMPLETE trial has; with fewer than
``MIN_TRIALS`` complete trials, or no parameter that varies, it returns a message instead.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import optuna
import pandas as pd
from optuna.trial import TrialState

from benchmark import stores
from benchmark.naming import Tag
from reports.collect import ReportError

MIN_TRIALS = 3
TOP_K = 10


class StudyLoadError(ReportError):
    """The Optuna study cannot be opened (storage or name)."""


def storage_url(flag: str | None, parent: Mapping[str, Any] | None) -> str:
    """The storage URL by the precedence of the module docstring."""
    if flag:
        return flag
    if os.environ.get(stores.OPTUNA_ENV):
        return os.environ[stores.OPTUNA_ENV]
    tag = (parent or {}).get("tags", {}).get(Tag.OPTUNA_STORAGE)
    if tag and "***" not in tag:
        return tag
    return stores.optuna_url()


def load_study(name: str, url: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except Exception as exc:  # noqa: BLE001 - KeyError (no such study), DB errors alike
        raise StudyLoadError(f"cannot open Optuna study {name!r} in {stores.redact(url)}: "
                             f"{type(exc).__name__}: {exc}") from None


@dataclass
class StudyReport:
    name: str
    direction: str
    counts: dict[str, int]
    best: pd.DataFrame               # number, value, state, params..., mlflow_run_id
    importances: pd.DataFrame | None  # param, importance (descending)
    importance_message: str | None
    trials: pd.DataFrame             # every COMPLETE trial: number, value, params...


def study_report(study: optuna.Study, top_k: int = TOP_K) -> StudyReport:
    """Best ``top_k`` complete trials, state counts and parameter importances of ``study``."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    keys = sorted({k for t in complete for k in t.params})
    rows = [{"number": t.number, "value": t.value, **{k: t.params.get(k) for k in keys},
             "mlflow_run_id": t.user_attrs.get("mlflow_run_id", "")} for t in complete]
    table = pd.DataFrame(rows)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = (table.sort_values("value", ascending=not maximize, kind="stable").head(top_k)
            .reset_index(drop=True) if not table.empty else table)
    importances, message = None, None
    if len(complete) < MIN_TRIALS:
        message = (f"parameter importances need at least {MIN_TRIALS} complete trials; "
                   f"study {study.study_name!r} has {len(complete)}")
    else:
        shared = set.intersection(*(set(t.params) for t in complete))
        varying = [p for p in sorted(shared) if len({repr(t.params[p]) for t in complete}) > 1]
        if not varying:
            message = "parameter importances: no parameter varies across the complete trials"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")    # sklearn/optuna internals
                    imp = optuna.importance.get_param_importances(
                        study, params=varying,
                        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
                importances = pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
            except (RuntimeError, ValueError) as exc:
                message = f"parameter importances could not be computed: {exc}"
    return StudyReport(name=study.study_name, direction=study.direction.name.lower(),
                       counts=counts, best=best, importances=importances,
                       importance_message=message, trials=table)


def trial_params(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """``{MLflow run id: the trial's active params}`` for every trial that names its run.

    A conditional knob (the decay parameter of another decay kind) is absent from a trial's
    params, whereas the MLflow params hold every config value, active or not."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        rid = t.user_attrs.get("mlflow_run_id")
        if rid:
            out[rid] = {k: v for k, v in t.params.items() if k not in ("method_name", "seed")}
    return out


def log_scaled_params(study: optuna.Study) -> frozenset[str]:
    """Names of the study's parameters whose distribution is log-scaled (``log=True``) in
    any trial: the search space's own statement of how a knob should be read."""
    out = set()
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if isinstance(dist, (optuna.distributions.FloatDistribution,
                                 optuna.distributions.IntDistribution)) and dist.log:
                out.add(name)
    return frozenset(out)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"
    return str(value)


def to_markdown(rep: StudyReport, title: str, caption: str) -> str:
    """Best-trials table and the importances (or the message saying why there are none)."""
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(rep.counts.items()))
    lines = [f"### {title}", "", f"Trials: {counts}. Objective: best validation SumR "
             f"({rep.direction}).", ""]
    if rep.best.empty:
        lines += ["No complete trial.", ""]
    else:
        cols = list(rep.best.columns)
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in rep.best.iterrows():
            lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
        lines.append("")
    lines += ["**Parameter importances** (fANOVA, optuna.importance)", ""]
    if rep.importances is None:
        lines += [rep.importance_message or "not available", ""]
    else:
        lines += ["| parameter | importance |", "|---|---:|"]
        lines += [f"| {p} | {v:.3f} |" for p, v in zip(rep.importances["param"],
                                                      rep.importances["importance"])]
        lines.append("")
    lines += [f"*{caption}*", ""]
    return "\n".join(lines)
