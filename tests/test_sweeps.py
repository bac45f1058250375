"""Sweeps end to end on the tiny generated collection, with a real Optuna storage (SQLite) and a
real MLflow store (SQLite) in a temporary run directory. No mocks: trials really train
``mean-pool`` for 1-3 epochs; workers are real spawned processes; the kill is a real SIGKILL.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmark import tracking
from benchmark.config import flatten, load_config
from benchmark.data import prepared
from benchmark.data.errors import DataError
from benchmark.naming import Tag, TrialStateTag
from benchmark.registry import get_method
from sweeps import objective as obj
from sweeps import runner, spaces, storage, studies
from sweeps.studies import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- spaces used by the test studies (module level: spawned workers unpickle them by name) --------
def space_lr(trial: optuna.Trial) -> dict:
    return {"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-3, log=True)}


def space_diverge_first(trial: optuna.Trial) -> dict:
    """Trial 0 gets lr = 1e38: with the real optimiser the weights overflow after the warm-up
    step and the loss of epoch 3 is non-finite (checked in the test); later trials are sane."""
    lr = 1e38 if trial.number == 0 else 2.5e-4
    return {"optim.lr": trial.suggest_float("optim.lr", lr, lr)}


def _spec(name: str, space=space_lr, **kw) -> StudySpec:
    kw.setdefault("epochs", 1)
    kw.setdefault("pruner", "none")
    return StudySpec(name=name, method="mean-pool", space=space, summary="test study",
                     n_trials=kw.pop("n_trials", 2), **kw)


@pytest.fixture(scope="module")
def stores_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep-stores")


@pytest.fixture(scope="module")
def mlflow_uri(stores_dir) -> str:
    return f"sqlite:///{stores_dir / 'mlflow.db'}"


@pytest.fixture(scope="module")
def optuna_url(stores_dir) -> str:
    return f"sqlite:///{stores_dir / 'optuna.db'}"


def _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri, **kw):
    lines: list[str] = []
    kw.setdefault("workers", 0)
    result = runner.run_study(spec, "tvr", data_root=tiny_root, storage_url=optuna_url,
                              tracking_uri=mlflow_uri, runs_dir=stores_dir / "runs",
                              log=lines.append, **kw)
    return result, lines


def _children(mlflow_uri, parent_id):
    runs = tracking.search_runs(mlflow_uri, ["tvr-synthetic"],
                                f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return sorted(runs, key=lambda r: int(r["tags"]["trial"]))


def _trials(optuna_url, study_name):
    study = optuna.load_study(study_name=study_name, storage=optuna_url)
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


# -- the registered studies and spaces --------------------------------------------------------------
def test_registered_studies_include_the_required_ones():
    names = {s.name for s in studies.list_studies()}
    assert {"tvr-default", "activitynet-default", "charades-default",
            "dl-dkd++-kd-decay-temperature", "kdc-net-krd", "method-comparison"} <= names
    tvr = studies.get_study("tvr-default")
    assert tvr.method == "dl-dkd++" and tvr.pruner != "none" and tvr.workers == 2
    with pytest.raises(KeyError, match="tvr-default"):
        studies.get_study("tvr-defualt")


@pytest.mark.parametrize("spec_name", [s.name for s in studies.list_studies()])
def test_every_space_yields_valid_config_overrides(spec_name):
    """20 random draws of each study's space resolve into a config of its method: every key
    the space returns is a real config path of the right type (ConfigError otherwise)."""
    spec = studies.get_study(spec_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = dict(spec.space(trial))
        cfg = load_config(spec.method, "tvr", trial_overrides=values)     # passed untouched
        flat = flatten(cfg)
        for key, value in values.items():
            assert flat[key] == value, key
        study.tell(trial, 0.0)


def test_krd_space_odd_windows_and_ranges():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(60):
        t = study.ask()
        v = spaces.krd(t)
        seen.add(v["method.krd.window"])
        assert 0.0 <= v["method.krd.delta"] <= 0.5 and 0.0 <= v["method.krd.lam"] <= 1.0
        study.tell(t, 0.0)
    assert seen == {1, 3, 5, 7, 9}


def test_comparison_grid_only_registered_methods():
    grid = studies.comparison_grid()
    for point in grid:
        get_method(point["method_name"])       # raises if unregistered
    assert len(grid) == len({(p["method_name"], p["seed"]) for p in grid})
    assert {p["seed"] for p in grid} == set(spaces.COMPARISON_SEEDS)


# -- stores ------------------------------------------------------------------------------------------
def test_unreachable_storage_errors_before_training(tmp_path, mlflow_uri):
    url = "postgresql+psycopg2://prvr:s3cret@127.0.0.1:9/optuna"     # port 9: nothing listens
    lines: list[str] = []
    with pytest.raises(runner.SweepError) as info:                   # no data root: it would
        runner.run_study(_spec("unreachable", scale="tiny"), "tvr",  # generate one if it got there
                         data_root=None, storage_url=url, tracking_uri=mlflow_uri,
                         runs_dir=tmp_path / "runs", workers=0, log=lines.append)
    message = str(info.value)
    assert "127.0.0.1:9/optuna" in message and "s3cret" not in message and "***" in message
    assert "is not reachable" in message                             # the connection check said so
    assert lines == []                                               # nothing generated, nothing run
    assert not (tmp_path / "runs" / "data").exists()                 # no synthetic data generated
    assert not (tmp_path / "runs" / "checkpoints").exists()          # nothing trained
    with pytest.raises(storage.StorageError, match=r"postgresql\+psycopg2"):
        storage.check_reachable("postgresql://u:p@127.0.0.1/db")
    with pytest.raises(storage.StorageError, match="unsupported scheme"):
        storage.check_reachable("redis://127.0.0.1")


def test_prepare_data_generates_once_and_says_so(tmp_path):
    lines: list[str] = []
    root, synthetic = prepared.prepare_data("tvr", None, tmp_path, profile="tvr", scale="tiny",
                                          log=lines.append)
    assert synthetic and root == tmp_path / "data" / "tvr-tiny-s0"
    assert (root / "tvr" / "SYNTHETIC").is_file()
    assert any("generating" in line for line in lines)
    lines.clear()
    again, _ = prepared.prepare_data("tvr", None, tmp_path, profile="tvr", scale="tiny",
                                   log=lines.append)
    assert again == root and any("cached" in line for line in lines)
    with pytest.raises(DataError, match="no tvr/ folder"):
        prepared.prepare_data("tvr", tmp_path / "nowhere", tmp_path, profile="tvr", scale="tiny")


# -- studies that train -------------------------------------------------------------------------------
def test_three_trial_study_parent_and_nested_runs(tiny_root, stores_dir, optuna_url, mlflow_uri):
    spec = _spec("three", n_trials=3, seed=5)
    result, lines = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri)
    assert result.study_name == "three-tvr-synthetic" and result.synthetic
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 0, 0)
    parent = tracking.get_run(mlflow_uri, result.parent_run_id)
    assert parent["status"] == "FINISHED" and parent["run_name"] == "three-tvr-synthetic"
    assert parent["tags"]["study"] == "three-tvr-synthetic"
    assert parent["metrics"]["best/val/SumR"] == pytest.approx(result.best_value)
    children = _children(mlflow_uri, result.parent_run_id)
    trials = _trials(optuna_url, result.study_name)
    assert len(children) == 3 and len(trials) == 3
    for trial, run in zip(trials, children):
        n = trial.number
        seed = 5                                                      # every trial: the study seed
        assert run["run_name"] == f"t{n:03d}-mean-pool-tvr-synthetic-s{seed}"
        assert run["status"] == "FINISHED"
        tags = run["tags"]
        expected = {Tag.STUDY: "three-tvr-synthetic", Tag.TRIAL: str(n),
                    Tag.TRIAL_STATE: TrialStateTag.COMPLETE, Tag.METHOD: "mean-pool",
                    Tag.VARIANT: "mean-pool", Tag.COLLECTION: "tvr", Tag.SYNTHETIC: "true",
                    Tag.SEED: str(seed)}
        assert {k: tags[k] for k in expected} == expected
        assert tags[Tag.GIT_COMMIT]
        assert trial.user_attrs[obj.ATTR_RUN_ID] == run["run_id"]
        # Optuna parameter names are the MLflow param names (dotted config paths)
        assert float(run["params"]["optim.lr"]) == pytest.approx(trial.params["optim.lr"])
        assert run["params"]["seed"] == str(seed) and run["params"]["train.epochs"] == "1"
        # the clock, the budget and E_ref (the mean-pool recipe's 100 epochs) are params
        assert run["params"]["train.schedule_clock"] == "progress"
        assert run["params"]["train.reference_epochs"] == "100"
        assert trial.value == pytest.approx(run["metrics"]["val/SumR"])    # 1 epoch: best = last
        assert "test/SumR" in run["metrics"] and "time/tracking_seconds" in run["metrics"]
    assert result.best_trial == max(trials, key=lambda t: t.value).number
    assert any("nox -s mlflow-ui" in line and "viewStateShareKey=three-tvr-synthetic" in line
               for line in lines)
    assert any(str(stores_dir / "optuna.db") in line for line in lines)
    # rerunning the finished study trains nothing and keeps the same parent run
    again, lines = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri)
    assert again.parent_run_id == result.parent_run_id and again.n_complete == 3
    assert any("already used" in line for line in lines)
    assert len(_children(mlflow_uri, result.parent_run_id)) == 3


def test_diverging_trial_fails_alone(tiny_root, stores_dir, optuna_url, mlflow_uri):
    spec = _spec("diverge", space=space_diverge_first, n_trials=2, epochs=3,
                 overrides={"train.val_every": 3})
    result, _ = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri)
    trials = _trials(optuna_url, result.study_name)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[0].user_attrs[obj.ATTR_FAIL_REASON]
    assert reason.startswith("NonFiniteLossError") and "non-finite loss" in reason
    runs = _children(mlflow_uri, result.parent_run_id)
    assert [r["status"] for r in runs] == ["FAILED", "FINISHED"]
    assert runs[0]["tags"][Tag.TRIAL_STATE] == TrialStateTag.FAIL
    assert runs[0]["tags"]["failure_reason"] == reason
    assert (result.n_complete, result.n_failed) == (1, 1)
    assert result.best_trial == 1


def test_pruned_trial_run_finished_with_state_pruned(tiny_root, stores_dir, optuna_url,
                                                     mlflow_uri):
    """A threshold no SumR reaches (600 > the 300 maximum) prunes each trial at its first
    report (after epoch 0 of 3); the run still ends FINISHED, tagged PRUNED."""
    spec = _spec("prune", n_trials=2, epochs=3, pruner="threshold", pruner_threshold=600.0,
                 pruner_warmup_epochs=0)
    result, _ = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri)
    trials = _trials(optuna_url, result.study_name)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(t.last_step == 0 for t in trials)
    assert (result.n_pruned, result.best_trial) == (2, None)
    for run in _children(mlflow_uri, result.parent_run_id):
        assert run["status"] == "FINISHED" and run["tags"][Tag.TRIAL_STATE] == TrialStateTag.PRUNED
        assert run["metrics"]["trial/epochs"] == 1.0
        assert "test/SumR" not in run["metrics"]                  # stopped before testing


@pytest.mark.slow
def test_sigkilled_worker_then_resume_keeps_finished_trials(tiny_root, stores_dir, optuna_url,
                                                           mlflow_uri):
    # 30 epochs of mean-pool on tiny TVR: several seconds per trial, so that the poll below
    # sees the second trial running (with 2 epochs a quiet machine finished it in between)
    spec = _spec("killed", n_trials=2, epochs=30)
    box: dict = {}

    def first_launch():
        try:
            box["result"] = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri, workers=1)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            box["error"] = exc

    launcher = threading.Thread(target=first_launch)
    launcher.start()
    study_name = "killed-tvr-synthetic"
    victim = None
    deadline = time.time() + 240
    while time.time() < deadline and victim is None and launcher.is_alive():
        time.sleep(0.05)
        try:
            trials = _trials(optuna_url, study_name)
        except KeyError:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and obj.ATTR_RUN_ID in t.user_attrs]
        if done and running:
            victim = running[0]
    assert victim is not None, f"never saw a running second trial: {box}"
    os.kill(int(victim.user_attrs[obj.ATTR_PID]), signal.SIGKILL)
    launcher.join(120)
    assert isinstance(box.get("error"), runner.SweepError), box
    assert "rerun the same command" in str(box["error"])
    before = _trials(optuna_url, study_name)
    finished_run = before[0].user_attrs[obj.ATTR_RUN_ID]
    assert before[1].state == TrialState.RUNNING                         # left behind
    assert tracking.get_run(mlflow_uri, victim.user_attrs[obj.ATTR_RUN_ID])["status"] == "RUNNING"

    result, lines = _run(spec, tiny_root, stores_dir, optuna_url, mlflow_uri)   # resume
    after = _trials(optuna_url, study_name)
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert after[0].user_attrs[obj.ATTR_RUN_ID] == finished_run          # kept, not re-run
    assert after[0].value == before[0].value
    assert after[1].user_attrs[obj.ATTR_OUTCOME] == "stale"
    assert "is gone" in after[1].user_attrs[obj.ATTR_FAIL_REASON]
    assert any("marked FAIL" in line for line in lines)
    stale_run = tracking.get_run(mlflow_uri, victim.user_attrs[obj.ATTR_RUN_ID])
    assert stale_run["status"] == "FAILED" and stale_run["tags"][Tag.TRIAL_STATE] == TrialStateTag.FAIL
    assert (result.n_complete, result.n_stale) == (2, 1)
    runs = _children(mlflow_uri, result.parent_run_id)
    assert [r["status"] for r in runs] == ["FINISHED", "FAILED", "FINISHED"]
    assert tracking.get_run(mlflow_uri, result.parent_run_id)["status"] == "FINISHED"


def two_worker_study(tiny_root, stores_dir, storage_url, mlflow_uri, name: str) -> None:
    """Two spawned workers on one storage: exactly the target, no duplicated trial numbers,
    one MLflow run per trial. Shared with tests/test_sweeps_postgres.py."""
    spec = _spec(name, n_trials=4)
    result, lines = _run(spec, tiny_root, stores_dir, storage_url, mlflow_uri, workers=2)
    assert any("2 process(es)" in line for line in lines)
    trials = _trials(storage_url, result.study_name)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == [0, 1, 2, 3]                         # exact budget, no duplicates
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert result.worker_exitcodes == [0, 0]
    runs = _children(mlflow_uri, result.parent_run_id)
    assert sorted(int(r["tags"]["trial"]) for r in runs) == [0, 1, 2, 3]
    assert len({r["run_name"] for r in runs}) == 4
    assert {t.user_attrs[obj.ATTR_RUN_ID] for t in trials} == {r["run_id"] for r in runs}
    assert os.getpid() not in {t.user_attrs[obj.ATTR_PID] for t in trials}   # ran in workers


@pytest.mark.slow
def test_two_workers_share_one_sqlite_storage(tiny_root, stores_dir, optuna_url, mlflow_uri):
    two_worker_study(tiny_root, stores_dir, optuna_url, mlflow_uri, "parallel")


def test_cli_list_and_bad_arguments(capsys):
    from sweeps.run import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "tvr-default" in out and "kdc-net-krd" in out
    assert main(["--study", "tvr-defualt", "--collection", "tvr"]) == 2
    assert "did you mean tvr-default" in capsys.readouterr().err
    assert main(["--study", "tvr-default"]) == 2
