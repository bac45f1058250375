"""One Optuna trial: space → overrides → config → nested MLflow run → training → value.

docs/architecture.md §8 step 6-7. The trial's value is the validation SumR of the epoch the
training loop selected (the loop alone tracks the best value; the pruning hook only reports
each epoch's value and prunes). Outcomes:

* completed: MLflow run FINISHED, ``trial_state=COMPLETE``;
* pruned (the pruning hook raised ``optuna.TrialPruned`` after a validation): the run ends
  FINISHED with ``trial_state=PRUNED`` (its epochs are valid results, just cut short);
* divergence (``NonFiniteLossError`` from the loop, or ``NaNScoreError`` from the evaluator
  when weights overflowed after the last loss check): the trial FAILS with the reason on
  both sides (trial user attr ``fail_reason``, MLflow tag ``failure_reason``), run FAILED; the
  worker's ``study.optimize`` catches it so the study goes on;
* anything else (a bug, Ctrl-C): run FAILED (KILLED on Ctrl-C) with the reason, then it
  propagates and stops the worker.

Each trial records ``host``, ``pid`` and ``pid_start`` (the process start time, against pid
reuse) so the launcher can fail trials of dead local workers at the next start, and the run
directory of each seed (``run_dirs``), whose last.ckpt lets the launcher re-enqueue a killed
trial as a new one that resumes it (``resume_of``; benchmark/training/resume.py): a seed that
finished is reused from its record.json, a seed with a last.ckpt continues from its last epoch
in the same run directory (a new MLflow run, tagged ``resumed_from_run``), the others train
from the start. The dead trial's values of the epochs not trained again are reported again,
so the pruner sees the whole curve and no step twice.
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import optuna

from benchmark import stores, tracking
from benchmark.config import flatten, load_config
from benchmark.naming import Tag, TrialStateTag
from sweeps import narration
from sweeps.studies import StudySpec, StudySpecError

if TYPE_CHECKING:
    from benchmark.training.loop import EpochSummary

# trial user attribute keys (read by runner.py and reports)
ATTR_RUN_ID = "mlflow_run_id"
ATTR_OUTCOME = "outcome"          # complete | pruned | failed (counted) | stale (not counted)
ATTR_FAIL_REASON = "fail_reason"
ATTR_HOST = "host"
ATTR_PID = "pid"
ATTR_PID_START = "pid_start"
ATTR_VARIANT = "variant"
ATTR_SEED = "seed"                # the first (or only) seed of the trial
ATTR_SEEDS = "seeds"              # every seed of the trial, in training order
ATTR_VALUES_BY_SEED = "values_by_seed"   # {seed: that seed's value}; the trial's value is their mean
ATTR_RUN_IDS = "mlflow_run_ids"   # {seed: its MLflow run id}
ATTR_RUN_DIRS = "run_dirs"        # {seed: its run directory (best.pt, last.ckpt, record.json)}
# a trial that continues a killed one (set when the launcher enqueues it)
ATTR_RESUME_OF = "resume_of"                 # the killed trial's number
ATTR_RESUME_SEEDS = "resume_seeds"           # its seeds (they may depend on its number)
ATTR_RESUME_RUN_DIRS = "resume_run_dirs"     # {seed: run directory with a last.ckpt}
ATTR_RESUME_REPORTS = "resume_reports"       # {step: value} it had reported
ATTR_RESUMED_EPOCHS = "resumed_epochs"       # {seed: epochs done when resumed}
ATTR_RESUME_ERROR = "resume_error"           # why a seed could not be resumed (trained anew)
ATTR_RESUMED_AS = "resumed_as"               # on the killed trial: the trial that continues it
TAG_RESUMED_FROM = "resumed_from_run"        # MLflow tag: the run a resumed run continues


@dataclass(frozen=True, kw_only=True)
class TrialContext:
    """What every trial of one study shares (picklable: it travels to spawned workers)."""

    spec: StudySpec
    study_name: str
    collection: str
    data_root: str
    synthetic: bool
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    seed: int
    epochs: int | None
    runs_dir: str
    seeds: tuple[int, ...] = ()     # several seeds per trial (--seeds); () = one seed, trial_seeds
    schedule_clock: str = "progress"


def process_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime); the command name (field 2) may hold spaces, so split after ')'
    return stat.rsplit(")", 1)[1].split()[19]


def trial_seeds(ctx: TrialContext, number: int) -> tuple[int, ...]:
    """Seeds of trial ``number``, in training order: the study's ``seeds`` when given (every
    trial trains on each, so trials differ only in their knobs); else the study seed (the
    default), or the study seed plus the trial number when the spec draws a seed per trial."""
    if ctx.seeds:
        return ctx.seeds
    return (ctx.seed + number,) if ctx.spec.seed_per_trial else (ctx.seed,)


class PruningHook:
    """Training hook: report the objective after each validation; raise TrialPruned when the
    study's pruner says so. It only prunes: the best value so far is the loop's, and the hook
    keeps the last epoch summary (read when the run ends cut short)."""

    def __init__(self, trial: optuna.Trial, key: str, step_offset: int = 0) -> None:
        self.trial, self.key = trial, key
        self.step_offset = step_offset    # seed k of a multi-seed trial reports at k × epochs + e
        self.last: EpochSummary | None = None
        self.epochs_seen = 0

    def __call__(self, summary: EpochSummary) -> None:
        if self.key not in summary.metrics:
            raise KeyError(f"pruning hook: epoch summary lacks {self.key!r}; "
                           f"has {sorted(summary.metrics)}")
        value = float(summary.metrics[self.key])
        self.last = summary
        self.epochs_seen += 1
        self.trial.report(value, self.step_offset + int(summary.epoch))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {summary.epoch}: "
                                     f"{self.key}={value:.4g}")


class TimedTracker:
    """Pass-through ``RunTracker`` that adds up the seconds spent in tracking calls (the
    sweep-overhead benchmark reads them as ``time/tracking_seconds``)."""

    def __init__(self, inner: tracking.MLflowRunTracker) -> None:
        self.inner = inner
        self.run_id = inner.run_id
        self.seconds = 0.0

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def log_params(self, params):
        return self._timed(self.inner.log_params, params)

    def set_tags(self, tags):
        return self._timed(self.inner.set_tags, tags)

    def log_metrics(self, metrics, step=None):
        return self._timed(self.inner.log_metrics, metrics, step)

    def log_artifact(self, path, artifact_path=None):
        return self._timed(self.inner.log_artifact, path, artifact_path)


def non_finite_error_types() -> tuple[type[BaseException], ...]:
    """Divergence: a non-finite loss term, or NaN scores at evaluation (weights overflowed
    between the last loss check and validation). These fail one trial, not the study."""
    from benchmark.ranks import NaNScoreError
    from benchmark.training.loop import NonFiniteLossError
    return (NonFiniteLossError, NaNScoreError)


def trial_overrides(ctx: TrialContext, values: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Fixed spec overrides, then the budget, seed and stores, then the space's values."""
    out: dict[str, Any] = dict(ctx.spec.overrides)
    if ctx.epochs is not None:
        out["train.epochs"] = ctx.epochs
    out["train.schedule_clock"] = ctx.schedule_clock
    out["seed"] = seed
    out["tracking.tracking_uri"] = ctx.tracking_uri
    out["tracking.runs_dir"] = ctx.runs_dir
    out["tracking.experiment"] = ctx.experiment
    out.update(values)
    return out


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> float:
    """The Optuna objective (see the module docstring for the outcomes). With several seeds
    the trial trains once per seed, each its own MLflow run, and its value is their mean; the
    pruner sees seed k's epoch e at step k × epochs + e, the same step in every trial."""
    pid = os.getpid()
    trial.set_user_attr(ATTR_HOST, socket.gethostname())
    trial.set_user_attr(ATTR_PID, pid)
    trial.set_user_attr(ATTR_PID_START, process_start_time(pid))

    values = dict(ctx.spec.space(trial))
    attrs = trial.user_attrs
    seeds = (tuple(attrs[ATTR_RESUME_SEEDS]) if ATTR_RESUME_SEEDS in attrs
             else trial_seeds(ctx, trial.number))
    resume_dirs: dict[str, str] = dict(attrs.get(ATTR_RESUME_RUN_DIRS) or {})
    reports = {int(s): float(v) for s, v in (attrs.get(ATTR_RESUME_REPORTS) or {}).items()}
    if len(seeds) > 1 and "seed" in values:
        raise StudySpecError(f"study {ctx.spec.name!r}: its space sets 'seed', which several "
                             f"seeds per trial ({', '.join(map(str, seeds))}) would override")
    trial.set_user_attr(ATTR_SEEDS, list(seeds))
    by_seed: dict[str, float] = {}
    for k, seed in enumerate(seeds):
        by_seed[str(seed)] = _train_one_seed(trial, ctx, values, seed, k, seeds,
                                             resume_dirs.get(str(seed)), reports)
        trial.set_user_attr(ATTR_VALUES_BY_SEED, dict(by_seed))
    value = sum(by_seed.values()) / len(by_seed)
    trial.set_user_attr(ATTR_OUTCOME, "complete")
    return value


def _set_seed_attr(trial: optuna.Trial, key: str, seed: int, value: Any) -> None:
    """One entry of a {seed: value} user attribute."""
    trial.set_user_attr(key, {**(trial.user_attrs.get(key) or {}), str(seed): value})


def _replay(trial: optuna.Trial, reports: Mapping[int, float], start: int, stop: int) -> None:
    """Report the killed trial's values of steps ``start <= step < stop`` (epochs this trial
    does not train again), so the pruner sees the whole curve."""
    for step in sorted(s for s in reports if start <= s < stop):
        trial.report(reports[step], step)


def _train_one_seed(trial: optuna.Trial, ctx: TrialContext, values: Mapping[str, Any], seed: int,
                    k: int, seeds: tuple[int, ...], resume_dir: str | None = None,
                    reports: Mapping[int, float] | None = None) -> float:
    """Train the trial's config on ``seed`` (its ``k``-th) in its own MLflow run; return the
    selected epoch's validation SumR. Pruning and failures end the trial (they propagate).
    ``resume_dir``: a killed trial's run directory for this seed, ``reports`` the values that
    trial reported (module docstring)."""
    from benchmark.config import config_hash
    from benchmark.experiment import identify, run_experiment
    from benchmark.record import RunRecord
    from benchmark.training.resume import RECORD_NAME, ResumeError, check_resumable

    t_start = time.perf_counter()
    cfg = load_config(ctx.spec.method, ctx.collection, data_root=ctx.data_root,
                      trial_overrides=trial_overrides(ctx, values, seed))
    narration.trial_started(trial, cfg)       # the worker's "started" line (sweeps/narration.py)
    identity = identify(cfg, ctx.synthetic, study=ctx.study_name, trial=trial.number)
    resumed_from: str | None = None
    if resume_dir is not None and (Path(resume_dir) / RECORD_NAME).is_file():
        done = RunRecord.load(Path(resume_dir) / RECORD_NAME)     # this seed had finished
        if k == 0:
            trial.set_user_attr(ATTR_RUN_ID, done.run_id)
            trial.set_user_attr(ATTR_VARIANT, identity.variant)
            trial.set_user_attr(ATTR_SEED, identity.seed)
        _set_seed_attr(trial, ATTR_RUN_IDS, seed, done.run_id)
        _set_seed_attr(trial, ATTR_RUN_DIRS, seed, resume_dir)
        _set_seed_attr(trial, ATTR_RESUMED_EPOCHS, seed, done.epochs_run)
        _replay(trial, reports or {}, k * cfg.train.epochs, (k + 1) * cfg.train.epochs)
        return done.val["SumR"]
    if resume_dir is not None:
        try:
            loop = check_resumable(resume_dir, config_hash(cfg))
            resumed_from = loop["run_id"] or ""
            _set_seed_attr(trial, ATTR_RESUMED_EPOCHS, seed, loop["epochs_done"])
            _replay(trial, reports or {}, k * cfg.train.epochs, k * cfg.train.epochs + loop["epochs_done"])
        except ResumeError as exc:                  # e.g. the config's defaults changed since
            _set_seed_attr(trial, ATTR_RESUME_ERROR, seed, str(exc)[:1000])
    run = tracking.open_identified_run(ctx.tracking_uri, identity, parent_run_id=ctx.parent_run_id)
    run_dir = (Path(resume_dir) if resumed_from is not None and resume_dir is not None
               else stores.checkpoint_dir(ctx.runs_dir, run.run_id))
    if k == 0:
        trial.set_user_attr(ATTR_RUN_ID, run.run_id)
        trial.set_user_attr(ATTR_VARIANT, identity.variant)
        trial.set_user_attr(ATTR_SEED, identity.seed)
    _set_seed_attr(trial, ATTR_RUN_IDS, seed, run.run_id)
    _set_seed_attr(trial, ATTR_RUN_DIRS, seed, str(run_dir))
    run.log_params(flatten(cfg))
    tracking.log_swept_params(run, values)
    if resumed_from is not None:
        run.set_tags({TAG_RESUMED_FROM: resumed_from})
    if len(seeds) > 1:
        run.set_tags({Tag.TRIAL_SEEDS: ",".join(map(str, seeds))})
    timed = TimedTracker(run)
    hook = PruningHook(trial, ctx.spec.objective, step_offset=k * cfg.train.epochs)
    t_fit = time.perf_counter()
    setup_seconds = t_fit - t_start

    def timings() -> dict[str, float]:
        now = time.perf_counter()
        return {"time/trial_seconds": now - t_start, "time/setup_seconds": setup_seconds,
                "time/fit_seconds": now - t_fit, "time/tracking_seconds": timed.seconds}

    try:
        record = run_experiment(cfg, timed, hooks=[hook], identity=identity, run_dir=run_dir,
                                resume=resumed_from is not None)
    except optuna.TrialPruned:
        trial.set_user_attr(ATTR_OUTCOME, "pruned")
        _finish(run, "FINISHED", TrialStateTag.PRUNED, hook, timings())
        raise
    except non_finite_error_types() as exc:
        reason = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr(ATTR_OUTCOME, "failed")
        trial.set_user_attr(ATTR_FAIL_REASON, reason[:2000])
        _finish(run, "FAILED", TrialStateTag.FAIL, hook, timings(), reason)
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr(ATTR_OUTCOME, "error")
        trial.set_user_attr(ATTR_FAIL_REASON, reason[:2000])
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        _finish(run, status, TrialStateTag.FAIL, hook, timings(), reason)
        raise
    value = record.val["SumR"]        # the loop's selected epoch: the best validation SumR
    _finish(run, "FINISHED", TrialStateTag.COMPLETE, hook, timings(), value=value)
    return value


def _finish(run: tracking.MLflowRunTracker, status: str, state: str, hook: PruningHook,
            timings: Mapping[str, float], reason: str | None = None, *,
            value: float | None = None) -> None:
    """Tag the trial's outcome and log its timings and value (a pruned trial's value is the
    best validation SumR the loop had reached when it was cut short)."""
    tags = {Tag.TRIAL_STATE: state}
    if reason:
        tags[Tag.FAILURE_REASON] = reason
    run.set_tags(tags)
    metrics = dict(timings)
    if value is None and hook.last is not None and math.isfinite(hook.last.best_val_sumr):
        value = hook.last.best_val_sumr
    if value is not None:
        metrics["trial/value"] = value
    metrics["trial/epochs"] = float(hook.epochs_seen)
    run.log_metrics(metrics)
    run.end(status)
