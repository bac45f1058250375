"""What a sweep worker says: one attributable line per event (issue 14 item 3).

Every line a worker prints goes through ``benchmark.console`` with the process-wide prefix
``[t003 kind=exp base=0.912 kd_temperature=0.123]``: the trial number and its swept values in
short form (the last segment of each dotted name, 3 significant digits). The prefix is read
per line from the live trial, so it shows the values as soon as the space has drawn them.

Events: ``started`` (method, seed, epochs, worker), then one of ``complete`` (value),
``pruned`` (the epoch and the value it was pruned at), ``failed`` (the reason), each followed
by the running summary of the study: finished/target, complete, pruned and failed, running,
and the best trial so far with its value and values.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark import console

if TYPE_CHECKING:
    from benchmark.config import ExperimentConfig

ATTR_OUTCOME = "outcome"          # = sweeps.objective.ATTR_OUTCOME (no import cycle)
ATTR_FAIL_REASON = "fail_reason"

_worker: int | None = None


def set_worker(index: int | None) -> None:
    """The worker index named on the ``started`` line (None: the launcher's own process)."""
    global _worker
    _worker = index


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def short_params(params: Mapping[str, Any]) -> str:
    """``kind=exp base=0.912 kd_temperature=0.123``: last dotted segment, unless two names
    share it (then the last two segments)."""
    lasts = [k.rsplit(".", 1)[-1] for k in params]
    parts = []
    for key, last in zip(params, lasts):
        name = last if lasts.count(last) == 1 else ".".join(key.split(".")[-2:])
        parts.append(f"{name}={short_value(params[key])}")
    return " ".join(parts)


def objective_value(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def trial_tag(number: int, params: Mapping[str, Any]) -> str:
    """``[t003 kind=exp base=0.912]`` (``[t003]`` before the space has drawn anything)."""
    values = short_params(params)
    return f"[t{number:03d}{' ' + values if values else ''}]"


def attach(trial: optuna.Trial) -> None:
    """Prefix every console line of this process with ``trial``'s tag from now on."""
    console.set_line_prefix(lambda: trial_tag(trial.number, trial.params))


def detach() -> None:
    console.set_line_prefix(None)


def say(message: str) -> None:
    console.write_line(message)


def trial_started(trial: optuna.Trial, cfg: "ExperimentConfig") -> None:
    """The ``started`` line (called by the objective once the trial's config is resolved)."""
    where = f"worker {_worker}, pid {os.getpid()}" if _worker is not None else f"pid {os.getpid()}"
    say(f"started: {cfg.method_name} seed {cfg.seed}, up to {cfg.train.epochs} epoch(s) ({where})")


def outcome_line(t: FrozenTrial, objective: str, reason: str | None = None) -> str:
    """What became of a finished trial, in one line."""
    if t.state == TrialState.COMPLETE:
        return f"complete: {objective} {objective_value(t.value)}"
    if t.state == TrialState.PRUNED:
        step = t.last_step
        if step is None:
            return "pruned before its first report"
        return (f"pruned after epoch {step + 1}: {objective} "
                f"{objective_value(t.intermediate_values[step])} (the pruner's verdict)")
    if t.state == TrialState.FAIL:
        reason = (t.user_attrs.get(ATTR_FAIL_REASON) or reason
                  or "no reason recorded (see the traceback above)")
        return f"failed: {reason}"
    return f"ended in state {t.state.name}"


def summary_line(study: optuna.Study, target: int, objective: str) -> str:
    """``sweep 3/8 finished: 2 complete, 1 pruned, 0 failed; 2 running; best t001 …``."""
    trials = study.get_trials(deepcopy=False)
    n = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    failed = sum(1 for t in trials if t.state == TrialState.FAIL
                 and t.user_attrs.get(ATTR_OUTCOME) != "stale")
    finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED] + failed
    text = (f"sweep {finished}/{target} finished: {n[TrialState.COMPLETE]} complete, "
            f"{n[TrialState.PRUNED]} pruned, {failed} failed; {n[TrialState.RUNNING]} running")
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if complete:
        best = study.best_trial
        text += (f"; best t{best.number:03d} {objective} {objective_value(best.value)}"
                 f" ({short_params(best.params)})")
    else:
        text += "; no complete trial yet"
    return text


def trial_finished(study: optuna.Study, trial_id: int, target: int, objective: str,
                   reason: str | None = None) -> None:
    """The outcome line and the running summary of the study, after one trial (``reason``:
    the exception the objective raised, for failures that recorded none)."""
    frozen = study._storage.get_trial(trial_id)
    say(outcome_line(frozen, objective, reason))
    say(summary_line(study, target, objective))
