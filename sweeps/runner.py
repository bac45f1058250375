"""run_study: data, stores, study, parent run, worker processes, clean-up (architecture §8).

Order of events, each step before any training:

1. stores: the Optuna URL and the MLflow URI are contacted; an unreachable one stops here,
   before any data is generated;
2. data: the configured root, or the synthetic ``small`` profile generated once into
   ``<runs>/data/<profile>-<scale>-s<seed>/`` (said on the console);
3. study: created once here with ``load_if_exists`` (rerunning resumes); its RUNNING trials
   whose process on this host is gone are failed now (other hosts': by the heartbeat) and
   their MLflow runs closed FAILED; one that left a last.ckpt is enqueued again as a new
   trial with its params, which resumes it from its last epoch (sweeps/objective.py); the
   enqueued grid (comparison study) is added once;
4. the study's MLflow parent run is created, or reopened from the id stored on the study;
5. K worker processes (spawn) with ``cores // K`` torch threads each share the remaining
   budget: before each trial a worker takes a lock shared by the workers of this launcher,
   counts finished + running trials against the target, and creates its trial under that
   lock, so the finished count equals the target exactly, also after a resume. Stale
   (killed) trials do not count; trials failed by a non-finite loss do.
6. the parent run gets the best trial; the console says where everything is.
"""
from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import optuna
from optuna.trial import TrialState

from benchmark import console, naming, stores, tracking
from benchmark.data.prepared import Log, prepare_data
from benchmark.errors import PRVRBenchError
from benchmark.naming import Tag, TrialStateTag
from sweeps import narration
from sweeps import objective as obj
from sweeps import storage as st
from sweeps.studies import StudySpec

STUDY_ATTR_PARENT = "mlflow_parent_run_id"


class SweepError(PRVRBenchError, RuntimeError):
    """A sweep could not start or a worker died; the message says what to do."""


class WorkersDiedError(SweepError):
    """A worker process died mid-sweep; rerunning the same command resumes the study."""


@dataclass
class SweepResult:
    study_name: str
    storage_url: str
    tracking_uri: str
    experiment: str
    data_root: str
    synthetic: bool
    parent_run_id: str
    n_target: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_stale: int
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    worker_exitcodes: list[int] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------- trials

def is_counted(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that used up budget: completed, pruned, or failed by the objective itself."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and t.user_attrs.get(obj.ATTR_OUTCOME) == "failed"


def remaining_budget(study: optuna.Study, target: int) -> int:
    trials = study.get_trials(deepcopy=False)
    used = sum(1 for t in trials if is_counted(t) or t.state == TrialState.RUNNING)
    return target - used


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None:
        now = obj.process_start_time(pid)
        if now is not None and now != start:
            return False   # the pid was reused by another process
    return True


def close_trial_run(tracking_uri: str, study: optuna.Study | None,
                    trial: optuna.trial.FrozenTrial, reason: str | None = None) -> None:
    """Close the MLflow runs of a stale trial (one per seed) FAILED (failed_trial_callback
    of the storage); runs already ended are left alone."""
    run_ids = {trial.user_attrs.get(obj.ATTR_RUN_ID),
               *(trial.user_attrs.get(obj.ATTR_RUN_IDS) or {}).values()} - {None, ""}
    if not run_ids:
        return
    reason = reason or "stale trial: no heartbeat from its worker"
    with contextlib.suppress(tracking.TrackingError):
        tracking.close_stale_runs(tracking_uri, sorted(run_ids), status="FAILED", reason=reason,
                                  extra_tags={Tag.TRIAL_STATE: TrialStateTag.FAIL})


def enqueue_resumption(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """Enqueue a new trial that continues the killed ``trial`` (same params and seeds, its run
    directories with a last.ckpt or a finished record.json, its reported values); its number,
    or None when no seed left either (nothing to resume: the study just runs a new trial)."""
    from benchmark.training.resume import LAST_CHECKPOINT, RECORD_NAME

    run_dirs = trial.user_attrs.get(obj.ATTR_RUN_DIRS) or {}
    resumable = {seed: d for seed, d in run_dirs.items()        # resumable, or finished: reused
                 if (Path(d) / LAST_CHECKPOINT).is_file() or (Path(d) / RECORD_NAME).is_file()}
    if not resumable or obj.ATTR_SEEDS not in trial.user_attrs:
        return None
    study.enqueue_trial(dict(trial.params), user_attrs={
        obj.ATTR_RESUME_OF: trial.number, obj.ATTR_RESUME_SEEDS: trial.user_attrs[obj.ATTR_SEEDS],
        obj.ATTR_RESUME_RUN_DIRS: resumable,
        obj.ATTR_RESUME_REPORTS: {str(s): v for s, v in trial.intermediate_values.items()}})
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return max(t.number for t in waiting if t.user_attrs.get(obj.ATTR_RESUME_OF) == trial.number)


def fail_dead_local_trials(study: optuna.Study, tracking_uri: str, log: Log = print) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone; close their MLflow runs; enqueue
    a trial that resumes each one that left a last.ckpt (``enqueue_resumption``)."""
    host = socket.gethostname()
    storage = study._storage
    failed, resumed = [], []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(obj.ATTR_HOST) != host or obj.ATTR_PID not in t.user_attrs:
            continue
        pid = int(t.user_attrs[obj.ATTR_PID])
        if _pid_alive(pid, t.user_attrs.get(obj.ATTR_PID_START)):
            continue
        reason = f"stale trial: worker pid {pid} on host {host} is gone"
        successor = enqueue_resumption(study, t)
        if successor is not None:
            reason += f"; resumed as trial {successor} from its last.ckpt"
            storage.set_trial_user_attr(t._trial_id, obj.ATTR_RESUMED_AS, successor)
            resumed.append((t.number, successor))
        storage.set_trial_user_attr(t._trial_id, obj.ATTR_OUTCOME, "stale")
        storage.set_trial_user_attr(t._trial_id, obj.ATTR_FAIL_REASON, reason)
        if storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
            close_trial_run(tracking_uri, study, t, reason)
            failed.append(t.number)
    if failed:
        log(f"resume: trials {failed} were left RUNNING by a dead worker; marked FAIL "
            "(their MLflow runs closed FAILED); they do not count towards the budget")
    for dead, successor in resumed:
        log(f"resume: trial {dead} left a last.ckpt; trial {successor} continues it from its "
            "last epoch (a new MLflow run, tagged resumed_from_run)")
    return failed


# ------------------------------------------------------------------------------- workers

@dataclass(frozen=True)
class WorkerArgs:
    ctx: obj.TrialContext
    storage_url: str
    target: int
    index: int
    threads: int
    sampler_seed: int
    heartbeat_interval: int
    grace_period: int


def _objective(ctx: obj.TrialContext, release: Callable[[], None], box: dict[str, Any],
               trial: optuna.Trial) -> float:
    release()   # the trial exists in the storage now: other workers may count it
    box["trial_id"] = trial._trial_id
    narration.attach(trial)       # every console line of this process names the trial from now
    try:
        return obj.run_trial(trial, ctx)
    except BaseException as exc:
        box["reason"] = f"{type(exc).__name__}: {exc}"
        raise


def worker_loop(w: WorkerArgs, lock) -> int:
    """Run trials until the study's budget is used up; returns the number this worker ran.
    The thread budget and Optuna's verbosity are the worker's own: in-process (``workers=0``)
    the caller gets its own back, so a later training in that process computes as before."""
    import torch

    threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    torch.set_num_threads(w.threads)
    # Optuna's own "Trial 3 failed …" warning would be an unattributed line: the worker says
    # each outcome itself, under the trial's tag (sweeps/narration.py)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return _run_trials(w, lock)
    finally:
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(verbosity)


def _run_trials(w: WorkerArgs, lock) -> int:
    storage = st.make_storage(
        w.storage_url, heartbeat_interval=w.heartbeat_interval, grace_period=w.grace_period,
        stale_trial_callback=functools.partial(close_trial_run, w.ctx.tracking_uri))
    spec = w.ctx.spec
    study = optuna.load_study(study_name=w.ctx.study_name, storage=storage,
                              sampler=spec.make_sampler(w.sampler_seed), pruner=spec.make_pruner())
    # both divergence errors (NonFiniteLossError, NaNScoreError) are Exceptions, as optuna needs
    catch = cast(tuple[type[Exception], ...], obj.non_finite_error_types())
    ran = 0
    while True:
        lock.acquire()
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                lock.release()

        box: dict[str, Any] = {}
        try:
            if remaining_budget(study, w.target) <= 0:
                break
            study.optimize(functools.partial(_objective, w.ctx, release, box), n_trials=1,
                           catch=catch, gc_after_trial=False, show_progress_bar=False)
            ran += 1
        finally:
            release()
            if "trial_id" in box:     # the outcome and the running summary, under the trial's tag
                with contextlib.suppress(Exception):   # narration must not hide the real error
                    narration.trial_finished(study, box["trial_id"], w.target, spec.objective,
                                             box.get("reason"))
                narration.detach()
    return ran


def _worker_main(w: WorkerArgs, lock) -> None:
    """Entry point of a spawned worker process."""
    console.set_plain(True)      # K processes share one terminal: plain lines, no live bars
    narration.set_worker(w.index)
    try:
        worker_loop(w, lock)
    except KeyboardInterrupt:
        sys.exit(130)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------- study

def study_name_for(spec: StudySpec, collection: str, synthetic: bool) -> str:
    """The study's name (``benchmark.naming.study_name``)."""
    return naming.study_name(spec.name, collection, synthetic)


def _spec_json(spec: StudySpec, **extra: Any) -> dict[str, Any]:
    d = {k: v for k, v in asdict(spec).items() if k not in ("space", "grid")}
    d["space"] = f"{spec.space.__module__}.{spec.space.__qualname__}"
    d["grid"] = None if spec.grid is None else f"{spec.grid.__module__}.{spec.grid.__qualname__}"
    d.update(extra)
    return json.loads(json.dumps(d, default=str))


#: Study user attribute: what makes the study's trials comparable (clock, budget, seeds). A
#: resumed study must ask for the same, or its trials would mix protocols.
STUDY_ATTR_PROTOCOL = "protocol"
#: The protocol of studies made before it was recorded: epoch clock, a seed per trial.
LEGACY_PROTOCOL_CLOCK = "epoch"


def study_protocol(spec: StudySpec, seed: int, seeds: tuple[int, ...],
                   epochs: int | None) -> dict[str, str]:
    """The settings every trial of one study must share, as strings (Optuna user attrs)."""
    if seeds:
        seed_rule = ",".join(map(str, seeds))
    else:
        seed_rule = f"{seed}+trial" if spec.seed_per_trial else str(seed)
    return {"schedule_clock": spec.schedule_clock, "seeds": seed_rule,
            "epochs": "preset" if epochs is None else str(epochs)}


def check_protocol(study: optuna.Study, protocol: Mapping[str, str], has_trials: bool) -> None:
    """Record the protocol on a new study; refuse to resume one made under another (a study
    from before protocols were recorded counts as epoch clock, seed per trial)."""
    recorded = study.user_attrs.get(STUDY_ATTR_PROTOCOL)
    if recorded is None and not has_trials:
        study.set_user_attr(STUDY_ATTR_PROTOCOL, dict(protocol))
        return
    if recorded is None:
        if protocol["schedule_clock"] == LEGACY_PROTOCOL_CLOCK:
            study.set_user_attr(STUDY_ATTR_PROTOCOL, dict(protocol))
            return
        recorded = {"schedule_clock": LEGACY_PROTOCOL_CLOCK, "seeds": "per trial (legacy)",
                    "epochs": protocol["epochs"]}
    diffs = [f"{k}: study {recorded.get(k)!r}, this command {v!r}" for k, v in protocol.items()
             if recorded.get(k) != v]
    if diffs:
        raise SweepError(f"study '{study.study_name}' was run under another protocol ("
                         f"{'; '.join(diffs)}); its trials would not be comparable with new ones. "
                         "Resume it with the same settings, or start a new study (--storage "
                         "elsewhere, or delete this one)")


def run_study(spec: StudySpec, collection: str, *, data_root: str | Path | None = None,
              n_trials: int | None = None, workers: int | None = None,
              storage_url: str | None = None, tracking_uri: str | None = None,
              seed: int | None = None, epochs: int | None = None,
              seeds: Sequence[int] | None = None,
              runs_dir: str | Path | None = None, log: Log = print,
              heartbeat_interval: int = st.HEARTBEAT_INTERVAL,
              grace_period: int = st.GRACE_PERIOD) -> SweepResult:
    """Create or resume the study and run it to ``n_trials`` finished trials.

    ``workers=0`` runs the trials in this process (tests, benchmarks); ``K >= 1`` spawns K
    worker processes. Raises SweepError when a store is unreachable (before any training) or
    when a worker died (rerun the same call to resume).
    """
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # the launcher says it in its own words
    runs = stores.runs_dir(runs_dir)
    storage_url = stores.optuna_url(storage_url, runs)
    tracking_uri = stores.mlflow_uri(tracking_uri, runs)
    seed = spec.seed if seed is None else seed
    epochs = epochs if epochs is not None else spec.epochs
    seeds = tuple(spec.seeds if seeds is None else seeds)
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds repeats a seed: {', '.join(map(str, seeds))}")
    protocol = study_protocol(spec, seed, seeds, epochs)
    workers = spec.workers if workers is None else workers
    if workers < 0:
        raise SweepError("workers must be >= 0")

    # 1. stores first: an unreachable store must not cost a data generation either
    try:
        st.check_reachable(storage_url)
    except st.StorageError as exc:
        raise SweepError(str(exc)) from None
    try:
        tracking.check_reachable(tracking_uri)
    except tracking.TrackingError as exc:
        raise SweepError(str(exc)) from None

    # 2. data
    profile = spec.profile or collection
    root, synthetic = prepare_data(collection, data_root, runs, profile=profile,
                                   scale=spec.scale, log=log)

    # 3. study
    study_name = study_name_for(spec, collection, synthetic)
    storage = st.make_storage(storage_url, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period)
    existed = study_name in {s.study_name for s in storage.get_all_studies()}
    study = st.create_or_load_study(storage, study_name, direction=spec.direction,
                                    pruner=spec.make_pruner())
    existing = study.get_trials(deepcopy=False)
    check_protocol(study, protocol, bool(existing))
    fail_dead_local_trials(study, tracking_uri, log)
    if spec.grid is not None and not existing:
        grid = spec.grid()
        for params in grid:
            study.enqueue_trial(params, skip_if_exists=True)
        if n_trials is None:
            n_trials = len(grid)
    target = n_trials if n_trials is not None else spec.n_trials
    if target < 1:
        raise SweepError("n_trials must be >= 1")
    done = sum(1 for t in study.get_trials(deepcopy=False) if is_counted(t))
    experiment = naming.experiment_name(collection, synthetic)

    # 4. parent run
    parent_id = study.user_attrs.get(STUDY_ATTR_PARENT)
    parent_tags = naming.study_tags(study=study_name, spec=spec.name, collection=collection,
                                    synthetic=synthetic, method=spec.method,
                                    storage=stores.redact(storage_url))
    parent = tracking.open_run(tracking_uri=tracking_uri, experiment=experiment,
                               run_name=study_name, tags=parent_tags, run_id=parent_id)
    if parent_id is None:
        study.set_user_attr(STUDY_ATTR_PARENT, parent.run_id)
        study.set_user_attr("collection", collection)
        study.set_user_attr("spec", spec.name)
        parent.log_params({"study.n_trials": target, "study.seed": seed,
                           "study.seeds": protocol["seeds"],
                           "study.schedule_clock": spec.schedule_clock,
                           "study.epochs": epochs if epochs is not None else "preset",
                           "study.pruner": spec.pruner, "study.sampler": spec.sampler,
                           "study.objective": spec.objective, "study.direction": spec.direction})
        parent.log_text(json.dumps(_spec_json(spec, collection=collection, data_root=str(root),
                                              study=study_name), indent=2), "study_spec.json")
    action = "resuming" if existed else "created"
    log(f"study: {action} '{study_name}' ({done}/{target} trials finished) in "
        f"{stores.redact(storage_url)}; MLflow parent run {parent.run_id} in experiment "
        f"'{experiment}' at {stores.redact(tracking_uri)}")

    ctx = obj.TrialContext(spec=spec, study_name=study_name, collection=collection,
                           data_root=str(root), synthetic=synthetic, tracking_uri=tracking_uri,
                           experiment=experiment, parent_run_id=parent.run_id, seed=seed,
                           epochs=epochs, runs_dir=str(runs), seeds=seeds,
                           schedule_clock=spec.schedule_clock)

    # 5. workers
    exitcodes: list[int] = []
    try:
        if remaining_budget(study, target) <= 0:
            log(f"study: budget of {target} trials already used; nothing to run")
        elif workers == 0:
            threads = max(1, _cores())
            w = WorkerArgs(ctx, storage_url, target, 0, threads, seed, heartbeat_interval,
                           grace_period)
            worker_loop(w, threading.Lock())
        else:
            threads = max(1, _cores() // workers)
            log(f"workers: {workers} process(es) × {threads} thread(s)")
            mp = multiprocessing.get_context("spawn")
            lock = mp.Lock()
            procs = []
            with _env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                      MLFLOW_DISABLE_TELEMETRY=os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")):
                for i in range(workers):
                    w = WorkerArgs(ctx, storage_url, target, i, threads, seed * 1000 + i,
                                   heartbeat_interval, grace_period)
                    p = mp.Process(target=_worker_main, args=(w, lock), name=f"sweep-worker-{i}")
                    p.start()
                    procs.append(p)
            for p in procs:
                p.join()
            exitcodes = [p.exitcode for p in procs]
    except BaseException as exc:
        parent.set_tags({Tag.FAILURE_REASON: f"{type(exc).__name__}: {exc}"[:2000]})
        parent.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise

    # 6. summary
    study = optuna.load_study(study_name=study_name, storage=storage)
    result = _summarise(study, storage_url, tracking_uri, experiment, root, synthetic,
                        parent.run_id, target, exitcodes, time.perf_counter() - t0)
    _log_best(parent, result)
    dead = [c for c in exitcodes if c != 0]
    if dead:
        parent.set_tags({Tag.FAILURE_REASON: f"worker exit codes {exitcodes}"})
        parent.end("FAILED")
        raise WorkersDiedError(f"{len(dead)} worker(s) died (exit codes {exitcodes}; negative: killed "
                         "by that signal, positive: see the traceback above); finished trials "
                         "are kept: rerun the same command to resume the study")
    parent.end("FINISHED")
    _print_summary(result, log)
    return result


def _summarise(study: optuna.Study, storage_url: str, tracking_uri: str, experiment: str,
               root: Path, synthetic: bool, parent_id: str, target: int,
               exitcodes: list[int], seconds: float) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    count = lambda pred: sum(1 for t in trials if pred(t))  # noqa: E731
    result = SweepResult(
        study_name=study.study_name, storage_url=storage_url, tracking_uri=tracking_uri,
        experiment=experiment, data_root=str(root), synthetic=synthetic,
        parent_run_id=parent_id, n_target=target,
        n_complete=count(lambda t: t.state == TrialState.COMPLETE),
        n_pruned=count(lambda t: t.state == TrialState.PRUNED),
        n_failed=count(lambda t: t.state == TrialState.FAIL
                       and t.user_attrs.get(obj.ATTR_OUTCOME) != "stale"),
        n_stale=count(lambda t: t.user_attrs.get(obj.ATTR_OUTCOME) == "stale"),
        worker_exitcodes=exitcodes, seconds=seconds)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        result.best_trial = best.number
        result.best_value = best.value
        result.best_params = dict(best.params)
        result.best_run_id = best.user_attrs.get(obj.ATTR_RUN_ID)
    return result


def _log_best(parent: tracking.MLflowRunTracker, r: SweepResult) -> None:
    metrics: dict[str, float] = {"study/n_complete": r.n_complete, "study/n_pruned": r.n_pruned,
                                 "study/n_failed": r.n_failed, "study/n_stale": r.n_stale}
    if r.best_value is not None and r.best_trial is not None:     # set together by _summarise
        metrics["best/val/SumR"] = r.best_value
        metrics["best/trial"] = r.best_trial
        parent.set_tags({Tag.BEST_TRIAL: str(r.best_trial), Tag.BEST_RUN_ID: r.best_run_id or ""})
    parent.log_metrics(metrics)


def _print_summary(r: SweepResult, log: Log) -> None:
    log(f"study '{r.study_name}': {r.n_complete} complete, {r.n_pruned} pruned, "
        f"{r.n_failed} failed ({r.n_stale} stale) of {r.n_target} in {r.seconds:.0f} s")
    if r.best_trial is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.best_params.items())
        log(f"best: trial {r.best_trial}, val/SumR {r.best_value:.2f} ({params}); "
            f"MLflow run {r.best_run_id}")
    log(f"stores: Optuna {stores.redact(r.storage_url)}; MLflow {stores.redact(r.tracking_uri)} "
        f"(experiment '{r.experiment}', parent run {r.parent_run_id}); data {r.data_root}"
        f"{' (synthetic)' if r.synthetic else ''}")
    served = r.tracking_uri.startswith(("http://", "https://"))
    base = r.tracking_uri if served else tracking.DEFAULT_UI_URL
    try:
        url = tracking.publish_comparison(r.tracking_uri, r.study_name, base_url=base)
    except tracking.TrackingError as exc:
        url = f"{base} (comparison view not stored: {exc})"
    log(f"UI: {'open' if served else 'nox -s mlflow-ui, then open'} {stores.redact(url)} "
        "(the trials as rows; swept parameters, val/SumR and test/SumR as columns)")
