"""Seeds and protocol of a study: every trial shares the study seed by default; ``--seeds``
trains each trial on several seeds and optimises their mean; a study resumed under another
clock, budget or seed rule is refused. Real Optuna and MLflow stores (SQLite), real training
of ``mean-pool`` on the tiny collection.
"""
from __future__ import annotations

import optuna
import pytest
import torch

from benchmark import tracking
from benchmark.naming import Tag
from sweeps import objective as obj
from sweeps import runner
from sweeps.run import main as sweep_main
from sweeps.studies import StudySpec
from tests.test_sweeps import space_lr


def _spec(name: str, **kw) -> StudySpec:
    kw.setdefault("epochs", 2)
    kw.setdefault("pruner", "none")
    return StudySpec(name=name, method="mean-pool", space=space_lr, summary="test study",
                     n_trials=kw.pop("n_trials", 2), **kw)


def _run(spec, tiny_root, tmp_path, **kw):
    return runner.run_study(spec, "tvr", data_root=tiny_root,
                            storage_url=f"sqlite:///{tmp_path / 'optuna.db'}",
                            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            runs_dir=tmp_path / "runs", workers=0, log=lambda m: None, **kw)


def _runs_of(tmp_path, parent_id):
    return tracking.search_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", ["tvr-synthetic"],
                                f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_several_seeds_per_trial_optimise_the_mean(tiny_root, tmp_path):
    result = _run(_spec("seeds"), tiny_root, tmp_path, seeds=(3, 4))
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    runs = _runs_of(tmp_path, result.parent_run_id)
    assert len(runs) == 4                                   # 2 trials × 2 seeds, a run each
    for trial in study.get_trials():
        assert trial.user_attrs[obj.ATTR_SEEDS] == [3, 4]
        by_seed = trial.user_attrs[obj.ATTR_VALUES_BY_SEED]
        mine = {r["tags"][Tag.SEED]: r for r in runs if r["tags"][Tag.TRIAL] == str(trial.number)}
        assert set(mine) == {"3", "4"} == set(by_seed)
        for seed, run in mine.items():                      # each seed's value is its run's
            assert by_seed[seed] == pytest.approx(run["metrics"]["trial/value"])
            assert run["tags"][Tag.TRIAL_SEEDS] == "3,4" and run["params"]["seed"] == seed
        assert trial.value == pytest.approx(sum(by_seed.values()) / 2)
        # the pruner saw seed k's epoch e at step k × 2 + e: the same step in every trial
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]


def test_trials_share_the_study_seed_by_default(tiny_root, tmp_path):
    threads = torch.get_num_threads()
    result = _run(_spec("shared", epochs=1), tiny_root, tmp_path, seed=7)
    assert torch.get_num_threads() == threads        # the in-process worker gave its threads back
    runs = _runs_of(tmp_path, result.parent_run_id)
    assert sorted(r["params"]["seed"] for r in runs) == ["7", "7"]
    assert {r["params"]["train.schedule_clock"] for r in runs} == {"progress"}


def test_a_study_resumed_under_another_protocol_is_refused(tiny_root, tmp_path):
    spec = _spec("proto", epochs=1, n_trials=1)
    _run(spec, tiny_root, tmp_path)
    with pytest.raises(runner.SweepError, match=r"another protocol \(epochs: study '1', this command '2'\)"):
        _run(spec, tiny_root, tmp_path, epochs=2, n_trials=2)
    with pytest.raises(runner.SweepError, match="seeds: study '0', this command '0,1'"):
        _run(spec, tiny_root, tmp_path, seeds=(0, 1), n_trials=2)
    with pytest.raises(runner.SweepError, match="schedule_clock: study 'progress', this command 'epoch'"):
        _run(spec.replace(schedule_clock="epoch"), tiny_root, tmp_path, n_trials=2)
    again = _run(spec, tiny_root, tmp_path, n_trials=2)       # the same protocol resumes
    assert again.n_complete == 2


def test_seeds_flag_is_parsed_and_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["--study", "tvr-default", "--collection", "tvr", "--seeds", "1,x"])
    assert exit_info.value.code == 2
    assert "expected comma-separated integers, got '1,x'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds repeat"):
        _spec("dup", seeds=(1, 1))


def test_schedule_clock_flag_sets_the_trials_clock(tiny_root, tmp_path):
    code = sweep_main(["--study", "tvr-default", "--collection", "tvr", "--data-root", str(tiny_root),
                       "--n-trials", "1", "--workers", "0", "--epochs", "1",
                       "--schedule-clock", "epoch", "--runs-dir", str(tmp_path / "runs"),
                       "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                       "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 0
    runs = tracking.search_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", ["tvr-synthetic"],
                                "tags.trial = '0'")
    assert [r["params"]["train.schedule_clock"] for r in runs] == ["epoch"]
